package plausibility

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/custos-iot/custos/internal/wire"
)

var update = flag.Bool("update", false, "rewrite testdata/state-*.bin")

// warmState returns the state of a stream with every part in use.
func warmState(t testing.TB, kind Kind) []byte {
	d := newDet(t)
	ctx := ctxFor(kind)
	for day := range 3 {
		rs := series(t0+int64(day)*msPerDay, 288, func(i int) float64 { return wobble(day*288 + i) })
		ctx.Received = rs[len(rs)-1].Time + 60_000
		d.Check(ctx, rs)
	}
	b, ok := d.AppendStreamState(nil, ctx.Stream)
	if !ok {
		t.Fatal("no state")
	}
	return b
}

func TestStateRoundTrip(t *testing.T) {
	for _, k := range []Kind{KindPower, KindEnergy, KindTemperature, KindSwitchedPower} {
		b := warmState(t, k)
		d := newDet(t)
		if err := d.RestoreStreamState("s", b); err != nil {
			t.Fatal(k, err)
		}
		b2, _ := d.AppendStreamState(nil, "s")
		if !bytes.Equal(b, b2) {
			t.Fatalf("%s: state does not round-trip", k)
		}
		name := filepath.Join("testdata", "fuzz", "FuzzRestoreStreamState", "warm-"+k.String())
		if *update {
			os.MkdirAll(filepath.Dir(name), 0o755)
			os.WriteFile(name, []byte("go test fuzz v1\n[]byte("+quote(b)+")\n"), 0o644)
		}
	}
	// A restored detector decides like the original.
	d1 := newDet(t)
	ctx := ctxFor(KindPower)
	day := series(t0, 288, wobble)
	ctx.Received = t0 + msPerDay
	d1.Check(ctx, day)
	b, _ := d1.AppendStreamState(nil, ctx.Stream)
	d2 := newDet(t)
	if err := d2.RestoreStreamState(ctx.Stream, b); err != nil {
		t.Fatal(err)
	}
	replay := make([]wire.Reading, len(day))
	for i, r := range day {
		replay[i] = wire.Reading{Time: r.Time + msPerDay, Value: r.Value}
	}
	ctx.Received = t0 + 2*msPerDay
	if n := len(d2.Check(ctx, replay)); n < 280 {
		t.Fatalf("restored detector flagged %d replayed readings", n)
	}
}

func quote(b []byte) string {
	var s []byte
	s = append(s, '"')
	for _, c := range b {
		s = append(s, '\\', 'x', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
	}
	return string(append(s, '"'))
}

func TestStateRejects(t *testing.T) {
	good := warmState(t, KindPower)
	for name, b := range map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte("XPS"), good[3:]...),
		"version":   append([]byte("CPS\x09"), good[4:]...),
		"truncated": good[:len(good)-1],
		"trailing":  append(bytes.Clone(good), 0),
		"kind":      append([]byte("CPS\x01\x09"), good[5:]...),
	} {
		if err := newDet(t).RestoreStreamState("s", b); !errors.Is(err, ErrState) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// FuzzRestoreStreamState: persisted state is untrusted. Decoding must not
// panic or hang, accepted bytes must re-encode identically, and a restored
// stream must be checkable.
func FuzzRestoreStreamState(f *testing.F) {
	f.Add([]byte("CPS\x01\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := newDet(t)
		if err := d.RestoreStreamState("s", b); err != nil {
			if !errors.Is(err, ErrState) {
				t.Fatalf("error does not wrap ErrState: %v", err)
			}
			return
		}
		b2, _ := d.AppendStreamState(nil, "s")
		if b[3] == stateVersion && !bytes.Equal(b, b2) {
			t.Fatalf("accepted state does not round-trip")
		}
		// An older version is read, and written in the current one, which
		// must round-trip.
		d2 := newDet(t)
		if err := d2.RestoreStreamState("s", b2); err != nil {
			t.Fatalf("re-encoded state refused: %v", err)
		}
		if b3, _ := d2.AppendStreamState(nil, "s"); !bytes.Equal(b2, b3) {
			t.Fatalf("re-encoded state does not round-trip")
		}
		for _, k := range []Kind{KindPower, KindEnergy} {
			ctx := ctxFor(k)
			ctx.Stream = "s"
			ctx.Received = t0
			d.Check(ctx, series(t0-msPerDay, 20, wobble))
		}
	})
}
