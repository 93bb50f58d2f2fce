package datamap_test

import (
	"context"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/datamap"
)

func TestCheck(t *testing.T) {
	exp := func(context.Context, datamap.Ref, datamap.Sink) error { return nil }
	era := func(context.Context, datamap.Ref) (datamap.Erased, error) { return datamap.Erased{}, nil }
	m := &datamap.Map{
		Stores: []datamap.Store{
			{Name: "readings", Categories: []string{"energy"}, Tables: []string{"chunks"}, Export: exp, Erase: era},
			{Name: "half", Categories: []string{"x"}, Tables: []string{"half"}, Export: exp},
		},
		NoPersonalData: map[string]string{"tenants": "organisations only"},
	}
	errs := m.Check([]string{"chunks", "tenants", "half", "new_table"}, []string{"exports"})
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{`"half" has no erase handler`, `table "new_table"`, `entry "exports"`} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %q in:\n%s", want, all)
		}
	}
	if len(errs) != 3 {
		t.Errorf("%d errors, want 3:\n%s", len(errs), all)
	}
	d := m.Describe()
	if len(d.Stores) != 2 || !d.Stores[0].Export || d.Stores[1].Erase || len(d.NoPersonalData) != 1 {
		t.Errorf("describe: %+v", d)
	}
}
