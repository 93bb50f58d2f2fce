package rollup

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Brussels for the DST test, whatever the host has

	"github.com/custos-iot/custos/internal/errs"
)

// ms parses an RFC 3339 time into Unix milliseconds.
func ms(t testing.TB, s string) int64 {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm.UnixMilli()
}

func fmtMS(v int64) string { return time.UnixMilli(v).UTC().Format(time.RFC3339Nano) }

func TestBucketAndNext(t *testing.T) {
	for _, c := range []struct {
		res          Resolution
		t            string
		bucket, next string
	}{
		// Exact bucket starts and 1 ms before them.
		{Min15, "2024-05-06T10:15:00Z", "2024-05-06T10:15:00Z", "2024-05-06T10:30:00Z"},
		{Min15, "2024-05-06T10:14:59.999Z", "2024-05-06T10:00:00Z", "2024-05-06T10:15:00Z"},
		{Hour, "2024-05-06T10:00:00Z", "2024-05-06T10:00:00Z", "2024-05-06T11:00:00Z"},
		{Hour, "2024-05-06T09:59:59.999Z", "2024-05-06T09:00:00Z", "2024-05-06T10:00:00Z"},
		{Day, "2024-05-06T00:00:00Z", "2024-05-06T00:00:00Z", "2024-05-07T00:00:00Z"},
		{Day, "2024-05-05T23:59:59.999Z", "2024-05-05T00:00:00Z", "2024-05-06T00:00:00Z"},
		{Month, "2024-05-01T00:00:00Z", "2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z"},
		{Month, "2024-04-30T23:59:59.999Z", "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z"},
		// The epoch and negative times: floor, not truncation towards zero.
		{Min15, "1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1970-01-01T00:15:00Z"},
		{Min15, "1969-12-31T23:59:59.999Z", "1969-12-31T23:45:00Z", "1970-01-01T00:00:00Z"},
		{Hour, "1969-12-31T23:00:00Z", "1969-12-31T23:00:00Z", "1970-01-01T00:00:00Z"},
		{Hour, "1969-12-31T22:59:59.999Z", "1969-12-31T22:00:00Z", "1969-12-31T23:00:00Z"},
		{Day, "1969-12-31T23:59:59.999Z", "1969-12-31T00:00:00Z", "1970-01-01T00:00:00Z"},
		{Day, "1969-07-20T20:17:40Z", "1969-07-20T00:00:00Z", "1969-07-21T00:00:00Z"},
		{Month, "1969-12-31T23:59:59.999Z", "1969-12-01T00:00:00Z", "1970-01-01T00:00:00Z"},
		{Month, "1969-02-28T12:00:00Z", "1969-02-01T00:00:00Z", "1969-03-01T00:00:00Z"},
		{Month, "1600-02-29T12:00:00Z", "1600-02-01T00:00:00Z", "1600-03-01T00:00:00Z"},
		// Leap years and month ends of 28, 29, 30 and 31 days.
		{Day, "2024-02-29T13:00:00Z", "2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z"},
		{Day, "2023-02-28T23:59:59.999Z", "2023-02-28T00:00:00Z", "2023-03-01T00:00:00Z"},
		{Month, "2024-02-29T23:59:59.999Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"},
		{Month, "2023-02-28T23:59:59.999Z", "2023-02-01T00:00:00Z", "2023-03-01T00:00:00Z"},
		{Month, "2000-02-29T00:00:00Z", "2000-02-01T00:00:00Z", "2000-03-01T00:00:00Z"},
		{Month, "1900-02-28T00:00:00Z", "1900-02-01T00:00:00Z", "1900-03-01T00:00:00Z"},
		{Month, "2024-04-30T00:00:00Z", "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z"},
		{Month, "2024-01-31T23:59:59.999Z", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"},
		{Month, "2024-03-01T00:00:00Z", "2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"},
		// Year boundaries.
		{Month, "2023-12-31T23:59:59.999Z", "2023-12-01T00:00:00Z", "2024-01-01T00:00:00Z"},
		{Month, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"},
		{Day, "2023-12-31T23:59:59.999Z", "2023-12-31T00:00:00Z", "2024-01-01T00:00:00Z"},
		{Min15, "2023-12-31T23:59:59.999Z", "2023-12-31T23:45:00Z", "2024-01-01T00:00:00Z"},
		// Raw buckets are the millisecond itself.
		{Raw, "2024-05-06T10:14:59.999Z", "2024-05-06T10:14:59.999Z", "2024-05-06T10:15:00Z"},
	} {
		tm := ms(t, c.t)
		if got := c.res.Bucket(tm); got != ms(t, c.bucket) {
			t.Errorf("%s.Bucket(%s) = %s, want %s", c.res, c.t, fmtMS(got), c.bucket)
		}
		if got := c.res.Next(ms(t, c.bucket)); got != ms(t, c.next) {
			t.Errorf("%s.Next(%s) = %s, want %s", c.res, c.bucket, fmtMS(got), c.next)
		}
		if got := c.res.Next(tm); got != ms(t, c.next) {
			t.Errorf("%s.Next(%s) = %s, want %s", c.res, c.t, fmtMS(got), c.next)
		}
	}
}

// TestDSTDayIsUTC: Europe/Brussels springs forward on 2024-03-31 (its local
// day lasts 23 hours) and falls back on 2024-10-27 (25 hours). Buckets are
// cut on the UTC time line, which has no daylight saving time, so both UTC
// days still have exactly 96 15-minute buckets and 24 hourly ones; only a
// client regrouping them into local days sees 92 or 100.
func TestDSTDayIsUTC(t *testing.T) {
	brussels, err := time.LoadLocation("Europe/Brussels")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		day       string
		localQtrs int
	}{{"2024-03-31", 92}, {"2024-10-27", 100}} {
		start := ms(t, c.day+"T00:00:00Z")
		if got := countBuckets(Min15, start, start+dayMS); got != 96 {
			t.Errorf("UTC day %s has %d 15-minute buckets, want 96", c.day, got)
		}
		if got := countBuckets(Hour, start, start+dayMS); got != 24 {
			t.Errorf("UTC day %s has %d hourly buckets, want 24", c.day, got)
		}
		if got := Min15.Period(start + dayMS - 1); got != start {
			t.Errorf("UTC day %s: period of its last ms is %s", c.day, fmtMS(got))
		}
		lday, _ := time.ParseInLocation(time.DateOnly, c.day, brussels)
		lstart, lend := lday.UnixMilli(), lday.AddDate(0, 0, 1).UnixMilli()
		if got := countBuckets(Min15, lstart, lend); got != c.localQtrs {
			t.Errorf("local day %s in Brussels covers %d 15-minute buckets, want %d", c.day, got, c.localQtrs)
		}
	}
}

// countBuckets counts the buckets of res that start in [from, to), walking
// with Next and checking it against Bucket.
func countBuckets(res Resolution, from, to int64) int {
	n := 0
	for b := res.Bucket(from); b < to; b = res.Next(b) {
		if b >= from {
			n++
		}
	}
	return n
}

// TestBucketAgainstTimePackage compares the integer calendar arithmetic
// with the time package over ±30,000 years and at the edges of the
// supported range.
func TestBucketAgainstTimePackage(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	times := []int64{0, -1, 1, minTime, maxTime - 1, ms(t, "0001-01-01T00:00:00Z"), ms(t, "0000-12-31T23:59:59.999Z")}
	for range 20000 {
		times = append(times, rng.Int64N(2e15)-1e15, rng.Int64N(2*dayMS*400)-dayMS*400)
	}
	for _, tm := range times {
		u := time.UnixMilli(tm).UTC()
		y, m, d := u.Date()
		want := map[Resolution]int64{
			Raw:   tm,
			Min15: time.Date(y, m, d, u.Hour(), u.Minute()/15*15, 0, 0, time.UTC).UnixMilli(),
			Hour:  time.Date(y, m, d, u.Hour(), 0, 0, 0, time.UTC).UnixMilli(),
			Day:   time.Date(y, m, d, 0, 0, 0, 0, time.UTC).UnixMilli(),
			Month: time.Date(y, m, 1, 0, 0, 0, 0, time.UTC).UnixMilli(),
		}
		next := map[Resolution]int64{
			Raw:   tm + 1,
			Min15: want[Min15] + min15MS,
			Hour:  want[Hour] + hourMS,
			Day:   time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC).UnixMilli(),
			Month: time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(),
		}
		period := map[Resolution]int64{
			Raw: want[Day], Min15: want[Day], Hour: want[Day],
			Day:   time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(),
			Month: time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(),
		}
		for _, res := range []Resolution{Raw, Min15, Hour, Day, Month} {
			if got := res.Bucket(tm); got != want[res] {
				t.Fatalf("%s.Bucket(%d = %s) = %s, want %s", res, tm, fmtMS(tm), fmtMS(got), fmtMS(want[res]))
			}
			if got := res.Next(tm); got != next[res] {
				t.Fatalf("%s.Next(%s) = %s, want %s", res, fmtMS(tm), fmtMS(got), fmtMS(next[res]))
			}
			if got := res.Period(tm); got != period[res] {
				t.Fatalf("%s.Period(%s) = %s, want %s", res, fmtMS(tm), fmtMS(got), fmtMS(period[res]))
			}
		}
	}
}

func TestPeriod(t *testing.T) {
	for _, c := range []struct {
		res    Resolution
		t      string
		period string
		end    string
	}{
		{Min15, "2024-02-29T23:59:59.999Z", "2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z"},
		{Min15, "2024-03-01T00:00:00Z", "2024-03-01T00:00:00Z", "2024-03-02T00:00:00Z"},
		{Hour, "2024-10-27T01:30:00Z", "2024-10-27T00:00:00Z", "2024-10-28T00:00:00Z"},
		{Hour, "1969-12-31T23:59:59.999Z", "1969-12-31T00:00:00Z", "1970-01-01T00:00:00Z"},
		{Day, "2024-12-31T23:59:59.999Z", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"},
		{Day, "2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"},
		{Month, "2024-07-15T08:00:00Z", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"},
		{Month, "1969-12-31T23:59:59.999Z", "1969-01-01T00:00:00Z", "1970-01-01T00:00:00Z"},
		{Raw, "2024-07-15T08:00:00Z", "2024-07-15T00:00:00Z", "2024-07-16T00:00:00Z"},
	} {
		got := c.res.Period(ms(t, c.t))
		if got != ms(t, c.period) {
			t.Errorf("%s.Period(%s) = %s, want %s", c.res, c.t, fmtMS(got), c.period)
		}
		if end := c.res.periodEnd(got); end != ms(t, c.end) {
			t.Errorf("%s.periodEnd(%s) = %s, want %s", c.res, c.period, fmtMS(end), c.end)
		}
	}
	// The most buckets a period holds: a leap year has 366 days.
	leap := ms(t, "2024-01-01T00:00:00Z")
	if n := countBuckets(Day, leap, Day.periodEnd(leap)); n != 366 || n != Day.maxBuckets() {
		t.Errorf("2024 has %d day buckets, maxBuckets %d", n, Day.maxBuckets())
	}
	if n := countBuckets(Day, ms(t, "2023-01-01T00:00:00Z"), leap); n != 365 {
		t.Errorf("2023 has %d day buckets", n)
	}
}

func TestFiner(t *testing.T) {
	order := []Resolution{Raw, Min15, Hour, Day, Month}
	for i, a := range order {
		for j, b := range order {
			if got, want := a.Finer(b), i < j; got != want {
				t.Errorf("%s.Finer(%s) = %v, want %v", a, b, got, want)
			}
		}
		// Fail closed: an invalid resolution is finer than anything, and
		// anything is finer than an invalid grant.
		if !Resolution("1s").Finer(a) || !a.Finer("") {
			t.Errorf("an invalid resolution is not finer than %s, or %s is not finer than an invalid one", a, a)
		}
	}
	if got := slicesOf(Aggregated); got != "15m 1h 1d 1mo" {
		t.Errorf("Aggregated = %s", got)
	}
}

func slicesOf(rs []Resolution) string {
	var s []string
	for _, r := range rs {
		s = append(s, string(r))
	}
	return strings.Join(s, " ")
}

func TestParseResolution(t *testing.T) {
	for _, s := range []string{"raw", "15m", "1h", "1d", "1mo"} {
		r, err := ParseResolution(s)
		if err != nil || string(r) != s || !r.Valid() {
			t.Errorf("ParseResolution(%q) = %q, %v", s, r, err)
		}
	}
	for _, s := range []string{"", "RAW", "15min", "15M", "1H", "1m", "1M", "month", " 1d", "1mo\x00", strings.Repeat("x", 1000)} {
		r, err := ParseResolution(s)
		if err == nil {
			t.Errorf("ParseResolution(%q) = %q, want an error", s, r)
			continue
		}
		if !errs.Is(errs.Invalid, err) {
			t.Errorf("ParseResolution(%q): error kind %v, want invalid", s, errs.KindOf(err))
		}
		msg := err.Error()
		if !strings.Contains(msg, "raw, 15m, 1h, 1d, 1mo") || len(msg) > 200 {
			t.Errorf("ParseResolution(%q): error %q does not list the valid values briefly", s, msg)
		}
	}
}
