package rollup

import (
	"testing"

	"github.com/custos-iot/custos/internal/wire"
)

// TestRowSet: Set replaces, inserts and removes buckets and keeps the row
// well formed (AppendRow would panic otherwise); Get finds them.
func TestRowSet(t *testing.T) {
	const day = int64(20_000) * dayMS
	row := &Row{Res: Hour, Period: day}
	for h := range int64(3) {
		row.Add(wire.Reading{Time: day + h*hourMS, Value: float64(h)})
	}
	one := Agg{Count: 1, Sum: 7, Min: 7, Max: 7, FirstTime: day + 5*hourMS, LastTime: day + 5*hourMS, First: 7, Last: 7}
	cases := []struct {
		name  string
		start int64
		agg   Agg
		want  []int64 // bucket starts after, in hours since day
	}{
		{"replace", day + hourMS, Agg{Count: 2, Sum: 2, Min: 1, Max: 1, FirstTime: day + hourMS, LastTime: day + hourMS, First: 1, Last: 1}, []int64{0, 1, 2}},
		{"insert", day + 5*hourMS, one, []int64{0, 1, 2, 5}},
		{"remove", day, Agg{}, []int64{1, 2, 5}},
		{"remove absent", day + 9*hourMS, Agg{}, []int64{1, 2, 5}},
	}
	for _, c := range cases {
		row.Set(c.start, c.agg)
		var got []int64
		for _, b := range row.Buckets {
			got = append(got, (b.Start-day)/hourMS)
		}
		if len(got) != len(c.want) {
			t.Fatalf("%s: buckets %v, want %v", c.name, got, c.want)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Fatalf("%s: buckets %v, want %v", c.name, got, c.want)
			}
		}
		if a, ok := row.Get(c.start); ok != (c.agg.Count > 0) || a != c.agg {
			t.Errorf("%s: Get = %+v %v", c.name, a, ok)
		}
		if _, err := DecodeRow(AppendRow(nil, row)); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	cl := row.Clone()
	cl.Set(day+hourMS, Agg{})
	if _, ok := row.Get(day + hourMS); !ok {
		t.Error("Clone shares buckets with the original")
	}
	for _, bad := range []int64{day + 1, day + dayMS} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Set(%d) did not panic", bad)
				}
			}()
			row.Set(bad, one)
		}()
	}
}
