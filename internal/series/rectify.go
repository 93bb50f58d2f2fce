package series

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/wire"
)

// Rectification (GDPR art. 16) replaces stored readings of one stream by
// corrected values, or deletes them as wrong, and recomputes exactly the
// rollup buckets they fall in, at every resolution, so that reads at every
// resolution agree with the corrected readings.
//
// The compactor folds new readings into stored rollups and never
// recomputes them, so a corrected reading does not fix a bucket it was
// folded into: Apply does. It rewrites the hourly chunks that hold the
// readings (re-sealed under the subject's key, as the compactor seals
// them), recomputes the 15-minute and hourly buckets from those raw
// readings, each day from its hourly buckets and each month from its daily
// buckets (the finer buckets being exact summaries of their part of the
// coarser one, this equals recomputing from raw data, also where the raw
// data of the rest of the day or month is gone), and replaces them.
//
// Before it replaces a bucket it checks that the stored bucket equals
// what the data below it gives before the correction. A bucket that does
// not — the data it summarises is partly gone — cannot be recomputed: the
// rectification is refused naming the bucket, and nothing changes. (A
// delta would be valid for count and sum, but not for min, max, first and
// last: a bucket whose minimum is corrected upwards needs the other values.)
//
// Everything happens in the caller's one transaction (RectifyTx): all of
// it or nothing.

// Correction is a reading's corrected value: every stored reading of the
// stream at Time is replaced by one reading with Value.
type Correction struct {
	Time  int64   `json:"t"` // Unix ms
	Value float64 `json:"v"`
}

// TimeRange is the half-open interval [From, To) in Unix ms.
type TimeRange struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

// Limits of one rectification. Larger ones are split into several
// requests.
const (
	// MaxCorrections bounds the corrections of one rectification (a month
	// of readings every second is 2.7 million).
	MaxCorrections = 3_000_000
	// MaxDeleteRanges bounds its ranges of readings deleted as wrong.
	MaxDeleteRanges = 1_000
	// MaxRectifyHours bounds the hourly chunks one rectification
	// rewrites (92 days): it runs in one transaction.
	MaxRectifyHours = 92 * 24
	// maxChunkReadings bounds the readings of one rewritten chunk, well
	// below what one block may hold (wire.MaxReadingsPerBatch).
	maxChunkReadings = 100_000
)

// CorrectedQuality is the quality a corrected reading gets: substituted
// (its value did not come from the device), keeping the clock flag of the
// reading it replaces (its time is unchanged); the bad and uncertain flags
// described the value that was replaced. A corrected reading counts
// towards the aggregates (see internal/rollup).
func CorrectedQuality(old wire.Quality) wire.Quality {
	return wire.QualitySubstituted | old&wire.QualityClockUnsynced
}

// Rectification corrects one stream's stored readings.
type Rectification struct {
	Tenant  registry.TenantID
	Subject registry.SubjectID // whose stream it is: the key that seals it
	Stream  registry.StreamID
	// Corrections in the order they were submitted; errors name them by
	// their 1-based position in this order.
	Corrections []Correction
	// Delete are ranges whose readings are deleted as wrong.
	Delete []TimeRange
}

// FormatTime formats a Unix ms time for messages.
func FormatTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

// CheckCorrections validates corrections on their own: a time in
// [0, wire.MaxTime) and a finite value each. first is the position of
// corrections[0] among all of the request's, for messages.
func CheckCorrections(cs []Correction, first int) error {
	for i, c := range cs {
		switch {
		case c.Time < 0 || c.Time >= wire.MaxTime:
			return errs.E(errs.Invalid, fmt.Sprintf("correction %d: time %d ms is outside 1970-01-01 to 2200-01-01", first+i, c.Time))
		case math.IsNaN(c.Value) || math.IsInf(c.Value, 0):
			return errs.E(errs.Invalid, fmt.Sprintf("correction %d: the value must be a finite number", first+i))
		}
	}
	return nil
}

// CheckRanges validates delete ranges: each non-empty within
// [0, wire.MaxTime], none overlapping another, at most MaxDeleteRanges.
func CheckRanges(rs []TimeRange) error {
	if len(rs) > MaxDeleteRanges {
		return errs.E(errs.Invalid, fmt.Sprintf("at most %d delete ranges per request", MaxDeleteRanges))
	}
	for i, r := range rs {
		if r.From < 0 || r.To > wire.MaxTime || r.From >= r.To {
			return errs.E(errs.Invalid, fmt.Sprintf("delete range %d: from must be before to, both within 1970-01-01 to 2200-01-01", i+1))
		}
	}
	s := sortedRanges(rs)
	for i := 1; i < len(s); i++ {
		if s[i].From < s[i-1].To {
			return errs.E(errs.Invalid, fmt.Sprintf("delete ranges overlap at %s", FormatTime(s[i].From)))
		}
	}
	return nil
}

func sortedRanges(rs []TimeRange) []TimeRange {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b TimeRange) int { return cmp.Compare(a.From, b.From) })
	return s
}

// Check validates the whole rectification: something to do, corrections
// and ranges valid, no two corrections at the same time, no correction
// inside a delete range, the limits kept.
func (r Rectification) Check() error {
	if len(r.Corrections) == 0 && len(r.Delete) == 0 {
		return errs.E(errs.Invalid, "nothing to rectify: no corrections and no delete ranges")
	}
	if len(r.Corrections) > MaxCorrections {
		return errs.E(errs.Invalid, fmt.Sprintf("at most %d corrections per request", MaxCorrections))
	}
	if err := CheckCorrections(r.Corrections, 1); err != nil {
		return err
	}
	if err := CheckRanges(r.Delete); err != nil {
		return err
	}
	order := r.order()
	for k := 1; k < len(order); k++ {
		a, b := order[k-1], order[k]
		if r.Corrections[a].Time == r.Corrections[b].Time {
			return errs.E(errs.Invalid, fmt.Sprintf("corrections %d and %d are for the same time %s", min(a, b)+1, max(a, b)+1, FormatTime(r.Corrections[a].Time)))
		}
	}
	del := sortedRanges(r.Delete)
	for _, i := range order {
		if k, in := rangeOf(del, r.Corrections[i].Time); in {
			return errs.E(errs.Invalid, fmt.Sprintf("correction %d is inside delete range %s to %s", i+1, FormatTime(del[k].From), FormatTime(del[k].To)))
		}
	}
	return nil
}

// order returns the positions of the corrections sorted by time.
func (r Rectification) order() []int {
	idx := make([]int, len(r.Corrections))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(r.Corrections[a].Time, r.Corrections[b].Time) })
	return idx
}

// rangeOf finds the range of sorted, disjoint rs that holds t.
func rangeOf(rs []TimeRange, t int64) (int, bool) {
	k, _ := slices.BinarySearchFunc(rs, t, func(r TimeRange, t int64) int {
		switch {
		case r.To <= t:
			return -1
		case r.From > t:
			return 1
		}
		return 0
	})
	return k, k < len(rs) && rs[k].From <= t && t < rs[k].To
}

// ErrNotCompacted is returned by Apply when readings at the times it
// changes are still in landed blocks, not compacted yet. Nothing was
// changed; run a compaction pass and apply again.
var ErrNotCompacted = errs.E(errs.Conflict, "readings at the times to rectify are still being stored (not compacted yet); try again in a few seconds")

// RectifyTx is one stream's stored data as a rectification sees and
// changes it: one database transaction in which no compaction pass runs.
// Everything written through it is committed together, or nothing.
type RectifyTx interface {
	// Chunks returns the stream's compacted chunks that may hold readings
	// in [from, to) (as ChunkSource's query, without landed blocks), with
	// their IDs, ordered by MinTime then ID. With data false their Data
	// is left nil.
	Chunks(ctx context.Context, from, to int64, data bool) ([]Chunk, error)
	// Landed returns the stream's landed blocks not compacted yet, with
	// their MinTime and MaxTime only.
	Landed(ctx context.Context) ([]Chunk, error)
	// ReplaceChunks deletes the stream's chunks with the IDs del and
	// inserts cs.
	ReplaceChunks(ctx context.Context, del []int64, cs []Chunk) error
	// Rollups calls fn for each stored rollup row of the stream at res
	// whose period starts in [from, to].
	Rollups(ctx context.Context, res rollup.Resolution, from, to int64, fn func(*RollupRow) error) error
	// PutRollups inserts or replaces rows of the stream; a row with nil
	// Data is deleted.
	PutRollups(ctx context.Context, rows []RollupRow) error
}

// Rectified is what a rectification did. It holds no reading values.
type Rectified struct {
	// Corrected counts the readings that now hold a corrected value.
	Corrected int `json:"corrected"`
	// Deleted counts the readings removed: those in delete ranges, and
	// further readings at a corrected time (one reading holds the
	// corrected value).
	Deleted int `json:"deleted"`
	// Chunks counts the hourly chunks rewritten and re-sealed.
	Chunks int `json:"chunks"`
	// Recomputed lists the rollup buckets recomputed, per resolution (15m,
	// 1h, 1d, 1mo) as runs of consecutive buckets.
	Recomputed []BucketRun `json:"recomputed"`
}

// BucketRun is a run of consecutive buckets of one resolution.
type BucketRun struct {
	Res rollup.Resolution `json:"res"`
	// From is the first bucket's start; To the end of the last.
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Buckets int       `json:"buckets"`
}

// Apply carries out r through tx: see the comment at the top of this
// file. On any error nothing it wrote may be committed; the errors name
// what is wrong (a correction by its position and time, a bucket by its
// resolution and start) and never a reading's value:
//   - errs.Invalid: r itself is not valid (Check);
//   - errs.NotFound: a correction's time has no stored reading, or a delete
//     range holds none (readings in quarantine are not stored readings:
//     they are released or rejected, not rectified);
//   - ErrNotCompacted (errs.Conflict): retry after a compaction pass;
//   - errs.Conflict: a bucket no longer agrees with the data below it;
//   - errs.Integrity: a chunk or rollup row cannot be opened or decoded.
func (r Rectification) Apply(ctx context.Context, tx RectifyTx, sealer Sealer) (Rectified, error) {
	const op errs.Op = "series.Rectification.Apply"
	if err := r.Check(); err != nil {
		return Rectified{}, errs.E(op, err)
	}
	if sealer == nil {
		sealer = Plain{}
	}
	a := &applier{r: r, tx: tx, sealer: sealer, order: r.order(), del: sortedRanges(r.Delete),
		rows: map[rollup.Key]*rowState{}, recomputed: map[rollup.Resolution]map[int64]bool{}}
	a.deleted = make([]int, len(a.del))
	res, err := a.run(ctx)
	if err != nil {
		return Rectified{}, errs.E(op, err)
	}
	return res, nil
}

// applier holds one Apply's state.
type applier struct {
	r      Rectification
	tx     RectifyTx
	sealer Sealer
	order  []int       // correction positions by time
	del    []TimeRange // delete ranges by time
	// deleted counts the readings each delete range removed.
	deleted    []int
	rows       map[rollup.Key]*rowState
	recomputed map[rollup.Resolution]map[int64]bool
	out        Rectified
}

// rowState is a stored rollup row as found (orig) and as changed (cur).
type rowState struct {
	orig, cur *rollup.Row
	dirty     bool
}

func (a *applier) run(ctx context.Context) (Rectified, error) {
	// Which hours change: those of the corrections, and those whose
	// chunks may hold readings in a delete range.
	byHour := map[int64][]int{} // hour -> correction positions, by time
	for _, i := range a.order {
		h := floorDiv(a.r.Corrections[i].Time, BucketMS) * BucketMS
		byHour[h] = append(byHour[h], i)
	}
	for _, d := range a.del {
		spans, err := a.tx.Chunks(ctx, d.From, d.To, false)
		if err != nil {
			return Rectified{}, err
		}
		for _, c := range spans {
			h := floorDiv(c.MinTime, BucketMS) * BucketMS
			if _, ok := byHour[h]; !ok {
				byHour[h] = nil
			}
			if len(byHour) > MaxRectifyHours {
				break
			}
		}
	}
	if len(byHour) > MaxRectifyHours {
		return Rectified{}, errs.E(errs.Invalid, fmt.Sprintf("the rectification touches more than %d hours of readings; split it into several requests", MaxRectifyHours))
	}
	if err := a.checkLanded(ctx); err != nil {
		return Rectified{}, err
	}
	hours := make([]int64, 0, len(byHour))
	for h := range byHour {
		hours = append(hours, h)
	}
	slices.Sort(hours)
	var days []int64 // days whose hourly buckets changed, in order
	for _, h := range hours {
		changed, err := a.hour(ctx, h, byHour[h])
		if err != nil {
			return Rectified{}, err
		}
		if d := rollup.Day.Bucket(h); changed && (len(days) == 0 || days[len(days)-1] != d) {
			days = append(days, d)
		}
	}
	for k, n := range a.deleted {
		if n == 0 {
			return Rectified{}, errs.E(errs.NotFound, fmt.Sprintf("stream %s has no stored reading in delete range %s to %s (readings in quarantine are released or rejected, not rectified)",
				a.r.Stream, FormatTime(a.del[k].From), FormatTime(a.del[k].To)))
		}
	}
	// Each changed day from its hourly buckets, each changed month from
	// its daily buckets.
	var months []int64
	for _, d := range days {
		if err := a.recompute(ctx, rollup.Day, d, rollup.Hour, d, rollup.Day.Next(d)); err != nil {
			return Rectified{}, err
		}
		if m := rollup.Month.Bucket(d); len(months) == 0 || months[len(months)-1] != m {
			months = append(months, m)
		}
	}
	for _, m := range months {
		if err := a.recompute(ctx, rollup.Month, m, rollup.Day, m, rollup.Month.Next(m)); err != nil {
			return Rectified{}, err
		}
	}
	if err := a.writeRows(ctx); err != nil {
		return Rectified{}, err
	}
	a.out.Recomputed = a.runs()
	return a.out, nil
}

// checkLanded refuses while a landed block may hold readings at a
// corrected time or in a delete range: those would escape the
// rectification (and come back uncorrected when compacted).
func (a *applier) checkLanded(ctx context.Context) error {
	landed, err := a.tx.Landed(ctx)
	if err != nil {
		return err
	}
	for _, l := range landed {
		k, _ := slices.BinarySearchFunc(a.order, l.MinTime, func(i int, t int64) int { return cmp.Compare(a.r.Corrections[i].Time, t) })
		if k < len(a.order) && a.r.Corrections[a.order[k]].Time <= l.MaxTime {
			return ErrNotCompacted
		}
		for _, d := range a.del {
			if d.From <= l.MaxTime && l.MinTime < d.To {
				return ErrNotCompacted
			}
		}
	}
	return nil
}

// hour rewrites the chunks of hour h with the corrections cs (positions,
// by time) and the delete ranges applied, and recomputes the hour's
// changed 15-minute buckets and its hourly bucket. It reports whether
// anything changed.
func (a *applier) hour(ctx context.Context, h int64, cs []int) (bool, error) {
	r := a.r
	chunks, err := a.tx.Chunks(ctx, h, h+BucketMS, true)
	if err != nil {
		return false, err
	}
	var ids []int64
	var rs []wire.Reading
	for i := range chunks {
		c := &chunks[i]
		if floorDiv(c.MinTime, BucketMS)*BucketMS != h || floorDiv(c.MaxTime, BucketMS)*BucketMS != h || c.Subject != r.Subject {
			// Only a block the compactor could not decode spans two hours.
			return false, errs.E(errs.Integrity, fmt.Sprintf("a chunk of stream %s at %s cannot be read, so that hour cannot be rectified", r.Stream, FormatTime(h)))
		}
		pt, err := a.sealer.Open(ctx, c.Subject, c.Data, ChunkAD(r.Tenant, r.Stream, h))
		if err != nil {
			if k := errs.KindOf(err); k == errs.Other || k == errs.Integrity {
				err = errs.E(errs.Integrity, fmt.Sprintf("a chunk of stream %s at %s cannot be opened", r.Stream, FormatTime(h)))
			}
			return false, err
		}
		if rs, err = wire.DecodeBlock(pt, rs); err != nil {
			return false, errs.E(errs.Integrity, fmt.Sprintf("a chunk of stream %s at %s cannot be decoded", r.Stream, FormatTime(h)))
		}
		ids = append(ids, c.ID)
	}
	if !slices.IsSortedFunc(rs, compareReadings) {
		slices.SortFunc(rs, compareReadings)
	}
	oldQ, oldH := aggregate(rs, h)

	// Apply, in place: readings and corrections are both in time order.
	var changed [4]bool // the hour's 15-minute buckets
	out := rs[:0]
	p := 0
	notFound := func(i int) error {
		return errs.E(errs.NotFound, fmt.Sprintf("correction %d: stream %s has no stored reading at %s (readings in quarantine are released or rejected, not rectified)",
			i+1, r.Stream, FormatTime(r.Corrections[i].Time)))
	}
	for i := 0; i < len(rs); {
		t := rs[i].Time
		j := i + 1
		for j < len(rs) && rs[j].Time == t {
			j++
		}
		if p < len(cs) && r.Corrections[cs[p]].Time < t {
			return false, notFound(cs[p])
		}
		switch k, in := rangeOf(a.del, t); {
		case p < len(cs) && r.Corrections[cs[p]].Time == t:
			q := CorrectedQuality(rs[i].Quality)
			out = append(out, wire.Reading{Time: t, Value: r.Corrections[cs[p]].Value, Quality: q})
			a.out.Corrected++
			a.out.Deleted += j - i - 1
			changed[quarter(h, t)] = true
			p++
		case in:
			a.deleted[k] += j - i
			a.out.Deleted += j - i
			changed[quarter(h, t)] = true
		default:
			out = append(out, rs[i:j]...)
		}
		i = j
	}
	if p < len(cs) {
		return false, notFound(cs[p])
	}
	if changed == [4]bool{} {
		return false, nil // a delete range's chunk with no reading in the range
	}
	newQ, newH := aggregate(out, h)

	// Check the stored buckets against the raw readings before the change,
	// then replace them.
	day := rollup.Min15.Period(h)
	q15, err := a.row(ctx, rollup.Min15, day)
	if err != nil {
		return false, err
	}
	for k := range changed {
		if !changed[k] {
			continue
		}
		start := h + int64(k)*15*60_000
		if err := a.agree(q15, start, oldQ[k], "its raw readings"); err != nil {
			return false, err
		}
		q15.cur.Set(start, newQ[k])
		q15.dirty = true
		a.mark(rollup.Min15, start)
	}
	hr, err := a.row(ctx, rollup.Hour, day)
	if err != nil {
		return false, err
	}
	if err := a.agree(hr, h, oldH, "its raw readings"); err != nil {
		return false, err
	}
	hr.cur.Set(h, newH)
	hr.dirty = true
	a.mark(rollup.Hour, h)

	// Re-seal the hour's readings in place of its chunks.
	var repl []Chunk
	for i := 0; i < len(out); i += maxChunkReadings {
		part := out[i:min(i+maxChunkReadings, len(out))]
		ct, err := a.sealer.Seal(ctx, r.Subject, wire.AppendBlock(nil, part), ChunkAD(r.Tenant, r.Stream, h))
		if err != nil {
			return false, err
		}
		repl = append(repl, Chunk{Tenant: r.Tenant, Subject: r.Subject, Stream: r.Stream,
			MinTime: part[0].Time, MaxTime: part[len(part)-1].Time, Count: len(part), Data: ct})
	}
	if err := a.tx.ReplaceChunks(ctx, ids, repl); err != nil {
		return false, err
	}
	a.out.Chunks += len(repl)
	return true, nil
}

// quarter returns which 15-minute bucket of hour h holds t.
func quarter(h, t int64) int { return int((t - h) / (15 * 60_000)) }

// aggregate returns the 15-minute and hourly aggregates of the readings
// of hour h.
func aggregate(rs []wire.Reading, h int64) (q [4]rollup.Agg, hour rollup.Agg) {
	for _, x := range rs {
		q[quarter(h, x.Time)].Add(x)
		hour.Add(x)
	}
	return q, hour
}

// recompute sets the bucket of res starting at start to the merge of the
// buckets of the finer resolution child in [from, to), after checking that
// the stored bucket equals their merge before the change.
func (a *applier) recompute(ctx context.Context, res rollup.Resolution, start int64, child rollup.Resolution, from, to int64) error {
	ch, err := a.row(ctx, child, child.Period(from))
	if err != nil {
		return err
	}
	merge := func(row *rollup.Row) rollup.Agg {
		var m rollup.Agg
		for _, b := range rollup.Buckets([]*rollup.Row{row}, from, to) {
			m.Merge(b.Agg)
		}
		return m
	}
	st, err := a.row(ctx, res, res.Period(start))
	if err != nil {
		return err
	}
	if err := a.agree(st, start, merge(ch.orig), "its "+string(child)+" buckets"); err != nil {
		return err
	}
	st.cur.Set(start, merge(ch.cur))
	st.dirty = true
	a.mark(res, start)
	return nil
}

// agree checks that the stored bucket of row at start (as found) equals
// want, what the data below it gives. Count, minimum, maximum, first and
// last must match exactly; the sum up to rounding (sums are folded in
// arrival order).
func (a *applier) agree(row *rowState, start int64, want rollup.Agg, below string) error {
	got, _ := row.orig.Get(start)
	if sameAgg(got, want) {
		return nil
	}
	return errs.E(errs.Conflict, fmt.Sprintf("the %s bucket %s of stream %s does not agree with %s (count %d stored, %d found): part of what it summarises is gone, so it cannot be recomputed; nothing was changed",
		row.orig.Res, FormatTime(start), a.r.Stream, below, got.Count, want.Count))
}

func sameAgg(a, b rollup.Agg) bool {
	if a.Count != b.Count || a.Min != b.Min || a.Max != b.Max || a.FirstTime != b.FirstTime || a.LastTime != b.LastTime || a.First != b.First || a.Last != b.Last {
		return false
	}
	// The rounding of a sum of n terms is bounded by n·ε·Σ|x| ≤ n²·ε·max|x|;
	// a millionth of n·max|x| is far above it in practice and far below
	// any reading that is missing or wrong.
	scale := float64(a.Count) * max(math.Abs(a.Min), math.Abs(a.Max), 1)
	return math.Abs(a.Sum-b.Sum) <= 1e-6*scale
}

// row returns the stored rollup row of res and period (empty if there is
// none), loading it once.
func (a *applier) row(ctx context.Context, res rollup.Resolution, period int64) (*rowState, error) {
	k := rollup.Key{Res: res, Period: period}
	if st := a.rows[k]; st != nil {
		return st, nil
	}
	row := &rollup.Row{Res: res, Period: period}
	err := a.tx.Rollups(ctx, res, period, period, func(rr *RollupRow) error {
		pt, err := a.sealer.Open(ctx, rr.Subject, rr.Data, RollupAD(a.r.Tenant, a.r.Stream, res, period))
		if err != nil {
			if k := errs.KindOf(err); k == errs.Other || k == errs.Integrity {
				err = errs.E(errs.Integrity, fmt.Sprintf("the %s rollup of stream %s for %s cannot be opened", res, a.r.Stream, FormatTime(period)))
			}
			return err
		}
		got, err := rollup.DecodeRow(pt)
		if err != nil || got.Res != res || got.Period != period {
			return errs.E(errs.Integrity, fmt.Sprintf("the %s rollup of stream %s for %s cannot be decoded", res, a.r.Stream, FormatTime(period)))
		}
		row = got
		return nil
	})
	if err != nil {
		return nil, err
	}
	st := &rowState{orig: row, cur: row.Clone()}
	a.rows[k] = st
	return st, nil
}

// writeRows seals and writes every changed row; a row left without
// buckets is deleted.
func (a *applier) writeRows(ctx context.Context) error {
	var out []RollupRow
	for k, st := range a.rows {
		if !st.dirty {
			continue
		}
		rr := RollupRow{Tenant: a.r.Tenant, Subject: a.r.Subject, Stream: a.r.Stream, Res: k.Res, Period: k.Period}
		if len(st.cur.Buckets) > 0 {
			ct, err := a.sealer.Seal(ctx, a.r.Subject, rollup.AppendRow(nil, st.cur), RollupAD(a.r.Tenant, a.r.Stream, k.Res, k.Period))
			if err != nil {
				return err
			}
			rr.Data = ct
		}
		out = append(out, rr)
	}
	slices.SortFunc(out, func(x, y RollupRow) int {
		return cmp.Or(cmp.Compare(x.Res, y.Res), cmp.Compare(x.Period, y.Period))
	})
	return a.tx.PutRollups(ctx, out)
}

func (a *applier) mark(res rollup.Resolution, start int64) {
	m := a.recomputed[res]
	if m == nil {
		m = map[int64]bool{}
		a.recomputed[res] = m
	}
	m[start] = true
}

// runs lists the recomputed buckets as runs, finest resolution first.
func (a *applier) runs() []BucketRun {
	out := []BucketRun{}
	for _, res := range rollup.Aggregated {
		starts := make([]int64, 0, len(a.recomputed[res]))
		for s := range a.recomputed[res] {
			starts = append(starts, s)
		}
		slices.Sort(starts)
		for i := 0; i < len(starts); {
			j, end := i+1, res.Next(starts[i])
			for j < len(starts) && starts[j] == end {
				end = res.Next(starts[j])
				j++
			}
			out = append(out, BucketRun{Res: res, From: time.UnixMilli(starts[i]).UTC(), To: time.UnixMilli(end).UTC(), Buckets: j - i})
			i = j
		}
	}
	return out
}

// CorrectionsAD is the associated data of a sealed part of a rectification
// request's corrections: it binds the part to its tenant, request and
// place among the request's parts.
func CorrectionsAD(t registry.TenantID, request string, seq int) []byte {
	return ad("corrections", string(t), request, strconv.Itoa(seq))
}
