package opcua

import (
	"math"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/custos-iot/custos/internal/wire"
)

// Status code severity, the two top bits (OPC UA Part 4, 7.39).
const (
	severityMask      = 0xC0000000
	severityUncertain = 0x40000000
)

// convert turns a data value into a reading, or says why it cannot.
// now is used when the value carries neither a source nor a server
// timestamp.
func convert(dv *ua.DataValue, now func() time.Time) (wire.Reading, Reason) {
	var r wire.Reading
	if dv == nil {
		return r, ReasonNotNumeric
	}
	var status ua.StatusCode
	if dv.EncodingMask&ua.DataValueStatusCode != 0 {
		status = dv.Status
	}
	switch uint32(status) & severityMask {
	case 0: // Good
	case severityUncertain:
		r.Quality = wire.QualityUncertain
	default: // Bad (and the reserved 11)
		r.Quality = wire.QualityBad
	}
	var v float64
	ok, finite := false, true
	if dv.EncodingMask&ua.DataValueValue != 0 && dv.Value != nil {
		v, ok = number(dv.Value.Value())
		finite = !math.IsNaN(v) && !math.IsInf(v, 0)
	}
	switch {
	case !ok && r.Quality == wire.QualityBad:
		return r, ReasonBadNoValue
	case !ok:
		return r, ReasonNotNumeric
	case !finite:
		return r, ReasonNotFinite
	}
	r.Value = v
	var t time.Time
	switch {
	case dv.EncodingMask&ua.DataValueSourceTimestamp != 0 && !dv.SourceTimestamp.IsZero():
		t = dv.SourceTimestamp
	case dv.EncodingMask&ua.DataValueServerTimestamp != 0 && !dv.ServerTimestamp.IsZero():
		t = dv.ServerTimestamp
	default:
		t = now()
	}
	r.Time = t.UnixMilli()
	if r.Time < 0 || r.Time >= wire.MaxTime {
		return r, ReasonBadTime
	}
	return r, ""
}

// number converts the numeric scalar variants to float64.
func number(x any) (float64, bool) {
	switch v := x.(type) {
	case bool:
		if v {
			return 1, true
		}
		return 0, true
	case int8:
		return float64(v), true
	case uint8:
		return float64(v), true
	case int16:
		return float64(v), true
	case uint16:
		return float64(v), true
	case int32:
		return float64(v), true
	case uint32:
		return float64(v), true
	case int64:
		return float64(v), true
	case uint64:
		return float64(v), true
	case float32:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}
