package plausibility

import (
	"testing"

	"github.com/custos-iot/custos/internal/wire"
)

// BenchmarkCheck measures clean batches of 1,000 readings (5-minute data)
// of one stream; readings/s is the figure to compare with ingest.
func BenchmarkCheck(b *testing.B) {
	for _, bc := range []struct {
		name string
		kind Kind
		pv   bool
		val  func(int) float64
	}{
		{"power", KindPower, false, wobble},
		{"pv", KindPower, true, wobble},
		{"energy", KindEnergy, false, func(i int) float64 { return 1e6 + float64(i)*40 }},
		{"temperature", KindTemperature, false, func(i int) float64 { return 10 + wobble(i)/1000 }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := newDet(b)
			ctx := ctxFor(bc.kind)
			ctx.Site.HasLocation, ctx.Site.Lat, ctx.Site.Lon = true, 52.5, 13.4
			ctx.Production = bc.pv
			const n = 1000
			rs := make([]wire.Reading, n)
			i := 0
			next := func() {
				for j := range rs {
					v := bc.val(i)
					if bc.pv { // daytime only: PV at noon, around 11:00 UTC
						rs[j] = wire.Reading{Time: t0 + int64(i/120)*msPerDay + 9*msPerHour + int64(i%120)*60_000, Value: v}
					} else {
						rs[j] = wire.Reading{Time: t0 + int64(i)*min5, Value: v}
					}
					i++
				}
				ctx.Received = rs[n-1].Time + 30_000
			}
			for range 20 { // warm the baseline
				next()
				d.Check(ctx, rs)
			}
			b.ReportAllocs()
			b.ResetTimer()
			flagged := 0
			for range b.N {
				b.StopTimer()
				next()
				b.StartTimer()
				flagged += len(d.Check(ctx, rs))
			}
			b.ReportMetric(float64(b.N)*n/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(float64(flagged)/float64(b.N), "flagged/batch")
		})
	}
}
