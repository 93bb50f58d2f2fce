package consent

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// PurposeID names a purpose within a tenant, e.g. "monitoring".
type PurposeID string

// Basis is a lawful basis of GDPR art. 6(1).
type Basis string

// The lawful bases.
const (
	BasisConsent            Basis = "consent"
	BasisContract           Basis = "contract"
	BasisLegalObligation    Basis = "legal-obligation"
	BasisVitalInterest      Basis = "vital-interest"
	BasisPublicTask         Basis = "public-task"
	BasisLegitimateInterest Basis = "legitimate-interest"
)

// Bases lists the lawful bases.
var Bases = []Basis{BasisConsent, BasisContract, BasisLegalObligation, BasisVitalInterest, BasisPublicTask, BasisLegitimateInterest}

// Purpose is one version of a tenant's purpose. A change of any field is a
// new version; the consents given on earlier versions name theirs.
type Purpose struct {
	Tenant  registry.TenantID `json:"tenant"`
	ID      PurposeID         `json:"id"`
	Version int               `json:"version"`
	Basis   Basis             `json:"basis"`
	// Categories are the data categories processed for the purpose.
	Categories []registry.Category `json:"categories"`
	// Recipients are who receives the data (e.g. "grid operator").
	Recipients []string `json:"recipients"`
	// RetentionDays is how long data is kept for the purpose.
	RetentionDays int `json:"retention_days"`
	// Finest is the finest resolution the purpose needs: data collected for
	// it leaves the house no finer.
	Finest rollup.Resolution `json:"finest"`
	// Notice is the text shown to the data subject.
	Notice  string    `json:"notice"`
	Created time.Time `json:"created"`
}

var purposeRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,39}$`)

// CheckPurposeID validates a purpose name.
func CheckPurposeID(id PurposeID) error {
	if !purposeRE.MatchString(string(id)) {
		return errs.E(errs.Invalid, "purpose must be lower-case letters, digits and '-', at most 40 characters (e.g. monitoring, research-open-data)")
	}
	return nil
}

// Check validates a purpose definition (its tenant, version and time are
// set by the caller).
func (p Purpose) Check() error {
	if err := CheckPurposeID(p.ID); err != nil {
		return err
	}
	if !slices.Contains(Bases, p.Basis) {
		return errs.E(errs.Invalid, fmt.Sprintf("basis must be one of %v", Bases))
	}
	if len(p.Categories) == 0 {
		return errs.E(errs.Invalid, "a purpose needs at least one data category")
	}
	for _, c := range p.Categories {
		if !registry.ValidCategory(c) {
			return errs.E(errs.Invalid, "unknown data category in purpose")
		}
	}
	if len(p.Recipients) > 20 {
		return errs.E(errs.Invalid, "at most 20 recipients")
	}
	for _, r := range p.Recipients {
		if err := registry.CheckDisplayName("recipient", r); err != nil {
			return err
		}
	}
	if p.RetentionDays < 1 || p.RetentionDays > 36500 {
		return errs.E(errs.Invalid, "retention_days must be between 1 and 36500")
	}
	if !p.Finest.Valid() {
		return errs.E(errs.Invalid, "finest must be one of raw, 15m, 1h, 1d, 1mo")
	}
	if len(p.Notice) == 0 || len(p.Notice) > 20000 {
		return errs.E(errs.Invalid, "notice must be 1 to 20000 characters")
	}
	return nil
}

// Covers reports whether the purpose processes category c.
func (p Purpose) Covers(c registry.Category) bool { return slices.Contains(p.Categories, c) }
