package plausibility

import (
	"fmt"
)

// Rule names a check. Its text form is stable: it is stored with
// quarantined readings and shown to operators.
type Rule uint8

// The rules.
const (
	RuleConfig           Rule = iota + 1 // the stream cannot be checked (unknown kind): fail closed
	RuleMeterIdentity                    // the reported meter identity does not match the one bound to the connector
	RuleFuture                           // time lies beyond the receive time plus Rules.Skew
	RuleTooOld                           // time lies before the receive time minus Rules.MaxAge
	RuleDuplicate                        // same time as the newest accepted reading
	RuleOutOfOrder                       // time before the newest accepted reading (a clock going back, a replay)
	RuleClockJump                        // the batch's arrival lag jumped: the device clock moved
	RuleLimit                            // value outside the physical limits
	RuleNegative                         // negative value on a site that is not net-metered
	RuleCounterBackwards                 // an energy counter decreased without rollover or recorded replacement
	RuleRate                             // change since the previous reading faster than physically possible
	RuleFrozen                           // identical non-zero value for Rules.FrozenSamples readings
	RuleReplay                           // the recent window of values repeats one seen before
	RuleNight                            // production while the sun is down
	RuleBalance                          // import, export, production and sub-metered loads of a site do not balance
	RuleBaseline                         // far from the seasonal median (robust z-score)
	RuleLevelShift                       // sustained shift from the seasonal median (CUSUM)
	RuleGap                              // a gap before this reading: a note, not a quarantine

	ruleCount = iota + 1
)

var ruleNames = [...]string{
	RuleConfig: "config", RuleMeterIdentity: "meter_identity", RuleFuture: "future", RuleTooOld: "too_old",
	RuleDuplicate: "duplicate", RuleOutOfOrder: "out_of_order", RuleClockJump: "clock_jump", RuleLimit: "limit",
	RuleNegative: "negative", RuleCounterBackwards: "counter_backwards", RuleRate: "rate", RuleFrozen: "frozen",
	RuleReplay: "replay", RuleNight: "production_at_night", RuleBalance: "balance", RuleBaseline: "baseline",
	RuleLevelShift: "level_shift", RuleGap: "gap",
}

func (r Rule) String() string {
	if r == 0 || int(r) >= len(ruleNames) {
		return fmt.Sprintf("rule(%d)", uint8(r))
	}
	return ruleNames[r]
}

// MarshalText returns the rule's stable name.
func (r Rule) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a rule name.
func (r *Rule) UnmarshalText(b []byte) error {
	for i, n := range ruleNames {
		if i > 0 && n == string(b) {
			*r = Rule(i)
			return nil
		}
	}
	return fmt.Errorf("plausibility: unknown rule %q", b)
}

// Quarantines reports whether a reading flagged by r must be kept out of
// rollups and releases until an operator releases it. Only RuleGap is a
// mere note.
func (r Rule) Quarantines() bool { return r != RuleGap }

// Statistical reports whether r is a statistical judgement rather than a
// hard rule: such flags are expected to have false positives.
func (r Rule) Statistical() bool { return r == RuleBaseline || r == RuleLevelShift }

// Reason is why a reading was flagged. Detail names the threshold that was
// crossed; it never contains the reading's value or time.
type Reason struct {
	Rule   Rule   `json:"rule"`
	Detail string `json:"detail"`
}

// Verdict flags the reading at Index of the checked slice.
type Verdict struct {
	Index   int      `json:"index"`
	Reasons []Reason `json:"reasons"`
}

// Quarantine reports whether any reason quarantines the reading.
func (v Verdict) Quarantine() bool {
	for _, r := range v.Reasons {
		if r.Rule.Quarantines() {
			return true
		}
	}
	return false
}

// Has reports whether rule is among the reasons.
func (v Verdict) Has(rule Rule) bool {
	for _, r := range v.Reasons {
		if r.Rule == rule {
			return true
		}
	}
	return false
}

// verdicts accumulates verdicts in index order without allocating until
// the first flag.
type verdicts []Verdict

func (vs *verdicts) add(i int, rule Rule, detail string) {
	n := len(*vs)
	if n > 0 && (*vs)[n-1].Index == i {
		(*vs)[n-1].Reasons = append((*vs)[n-1].Reasons, Reason{rule, detail})
		return
	}
	*vs = append(*vs, Verdict{Index: i, Reasons: []Reason{{rule, detail}}})
}
