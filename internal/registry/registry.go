// Package registry owns the things Custos keeps data about and for: tenants,
// data subjects, their sites, devices, the connectors that serve them and the
// streams those devices produce.
//
// It defines the named ID types used across the hub and validates names and
// data categories. It must never hold readings, keys or credentials.
package registry

import (
	"encoding/base32"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/errs"
)

// Named IDs. They are opaque strings of the form "<prefix>_<random>".
type (
	TenantID    string
	SubjectID   string
	SiteID      string
	DeviceID    string
	ConnectorID string
	StreamID    string
)

// Category is a data category, e.g. "energy.consumption".
type Category string

// Categories known to the first release. A stream must carry one of them;
// later issues register purposes and retention per category.
var Categories = []Category{
	"energy.consumption",
	"energy.production",
	"energy.storage",
	"energy.heating",
	"energy.charging",
	"machine.telemetry",
	"environment",
	"location",
}

// ValidCategory reports whether c is a known data category.
func ValidCategory(c Category) bool {
	for _, k := range Categories {
		if k == c {
			return true
		}
	}
	return false
}

// Tenant is an organisation: a cooperative, a machine owner, a city.
// Tenants are hard-isolated from each other.
type Tenant struct {
	ID      TenantID  `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// Subject is a data subject: a member, a household, a machine owner.
// Name, Email and Address are personal data: the hub stores them only
// sealed under the subject's own key (see Profile), so erasing the subject
// erases them too.
type Subject struct {
	ID      SubjectID `json:"id"`
	Tenant  TenantID  `json:"tenant"`
	Name    string    `json:"name"`
	Email   string    `json:"email,omitempty"`
	Address string    `json:"address,omitempty"`
	Created time.Time `json:"created"`
}

// Profile is the personal part of a Subject, as sealed at rest.
type Profile struct {
	Name    string `json:"name"`
	Email   string `json:"email,omitempty"`
	Address string `json:"address,omitempty"`
}

// CheckProfile validates a subject's personal fields.
func CheckProfile(p Profile) error {
	if err := CheckDisplayName("subject", p.Name); err != nil {
		return err
	}
	if len(p.Email) > 254 || (p.Email != "" && !emailRE.MatchString(p.Email)) {
		return errs.E(errs.Invalid, "email must look like name@example.org")
	}
	if len(p.Address) > 500 {
		return errs.E(errs.Invalid, "address must be at most 500 characters")
	}
	for _, r := range p.Address {
		if r < 0x20 && r != '\n' || r == 0x7f {
			return errs.E(errs.Invalid, "address must not contain control characters")
		}
	}
	return nil
}

// Site is a home or a factory hall belonging to a subject.
type Site struct {
	ID      SiteID    `json:"id"`
	Tenant  TenantID  `json:"tenant"`
	Subject SubjectID `json:"subject"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// ConnectorStatus is the lifecycle state of a connector.
type ConnectorStatus string

// Connector states.
const (
	ConnectorPending ConnectorStatus = "pending" // created, not yet enrolled
	ConnectorActive  ConnectorStatus = "active"  // holds a certificate
	ConnectorRevoked ConnectorStatus = "revoked" // refused on every request and renewal
)

// Connector is an edge agent with its own X.509 identity.
type Connector struct {
	ID      ConnectorID     `json:"id"`
	Tenant  TenantID        `json:"tenant"`
	Name    string          `json:"name"`
	Status  ConnectorStatus `json:"status"`
	Created time.Time       `json:"created"`
	// CertExpiry is the NotAfter of the newest certificate issued to it.
	CertExpiry time.Time `json:"cert_expiry,omitzero"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	// Health is what the connector last reported about itself.
	Health *Health `json:"health,omitempty"`
}

// Health is a connector's report on itself, sent on every sync.
type Health struct {
	Reported     time.Time      `json:"reported"`
	Version      string         `json:"version"`
	CertExpiry   time.Time      `json:"cert_expiry"`
	SpoolRecords int64          `json:"spool_records"`
	SpoolBytes   int64          `json:"spool_bytes"`
	Dropped      uint64         `json:"dropped"`
	SentBatches  uint64         `json:"sent_batches"`
	SendFailures uint64         `json:"send_failures"`
	Sources      []SourceHealth `json:"sources,omitempty"`
}

// SourceHealth is the state of one of a connector's sources.
type SourceHealth struct {
	Name     string            `json:"name"`
	Status   string            `json:"status"` // "ok", "degraded" or "down"
	Counters map[string]uint64 `json:"counters,omitempty"`
}

// Device is a meter, machine or sensor at a site, served by one connector.
type Device struct {
	ID        DeviceID    `json:"id"`
	Tenant    TenantID    `json:"tenant"`
	Site      SiteID      `json:"site"`
	Connector ConnectorID `json:"connector"`
	Name      string      `json:"name"`
	// MeterSerial, if set, is the identity of the meter this device is:
	// readings its connector sends with another identity (or none) for
	// the device are quarantined (rule meter_identity).
	MeterSerial string `json:"meter_serial,omitempty"`
	// MeterReplaced is when the meter was last replaced (zero: never):
	// the first counter reading at or after it may restart anywhere.
	MeterReplaced time.Time `json:"meter_replaced,omitzero"`
	// PreviousMeterSerial is the serial of the meter replaced then: its
	// readings from before MeterReplaced are accepted under it.
	PreviousMeterSerial string    `json:"previous_meter_serial,omitempty"`
	Created             time.Time `json:"created"`
}

// Role is what a power stream means for its site's energy balance; the
// site balance check pairs a site's streams by it. The zero value: no role.
type Role string

// The roles.
const (
	RoleNone       Role = ""
	RoleImport     Role = "import"     // power drawn from the grid, W ≥ 0
	RoleExport     Role = "export"     // power fed into the grid, W ≥ 0
	RoleProduction Role = "production" // local generation (PV), W ≥ 0
	RoleLoad       Role = "load"       // a sub-metered load (heat pump, EV charger), W ≥ 0
)

// CheckRole validates a stream's role: one of the roles, and only on a
// stream in W (the balance is a balance of power).
func CheckRole(r Role, unit string) error {
	switch r {
	case RoleNone:
		return nil
	case RoleImport, RoleExport, RoleProduction, RoleLoad:
		if unit != "W" {
			return errs.E(errs.Invalid, "a stream with a site role must measure power in W")
		}
		return nil
	}
	return errs.E(errs.Invalid, "role must be import, export, production, load or empty")
}

// CheckMeterSerial validates a meter serial: up to 64 printable ASCII
// characters without spaces.
func CheckMeterSerial(s string) error {
	if len(s) > 64 {
		return errs.E(errs.Invalid, "meter serial must be at most 64 characters")
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] >= 0x7f {
			return errs.E(errs.Invalid, "meter serial must be printable ASCII without spaces")
		}
	}
	return nil
}

// Stream is one metric of one device. Its Key, "<device name>/<metric>", is
// how a connector names it on the wire. Subject is the data subject whose
// site the device is at: the owner of the stream's data and of its key.
type Stream struct {
	ID       StreamID  `json:"id"`
	Tenant   TenantID  `json:"tenant"`
	Subject  SubjectID `json:"subject"`
	Device   DeviceID  `json:"device"`
	Metric   string    `json:"metric"`
	Key      string    `json:"key"`
	Category Category  `json:"category"`
	Unit     string    `json:"unit"`
	// Role is the stream's part in its site's energy balance, if any.
	Role Role `json:"role,omitempty"`
	// Site is the site of the stream's device (looked up, not stored).
	Site    SiteID    `json:"site,omitempty"`
	Created time.Time `json:"created"`
}

// StreamKey is the wire key of a device's metric.
func StreamKey(device, metric string) string { return device + "/" + metric }

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	metricRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	unitRE   = regexp.MustCompile(`^[A-Za-z0-9%/°.^ -]{0,16}$`)
	idRE     = regexp.MustCompile(`^[a-z]{3}_[a-z2-7]{20}$`)
	emailRE  = regexp.MustCompile(`^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$`)
)

// CheckName validates the name of a device, connector or site: 1 to 64
// letters, digits, '.', '_' or '-', starting with a letter or digit. Device
// names become part of stream keys, so they must be wire-safe.
func CheckName(what, name string) error {
	if !nameRE.MatchString(name) {
		return errs.E(errs.Invalid, fmt.Sprintf("%s name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", what))
	}
	return nil
}

// CheckDisplayName validates a free-text display name (tenants, subjects).
func CheckDisplayName(what, name string) error {
	if strings.TrimSpace(name) == "" || len(name) > 200 {
		return errs.E(errs.Invalid, fmt.Sprintf("%s name must be 1-200 characters", what))
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return errs.E(errs.Invalid, fmt.Sprintf("%s name must not contain control characters", what))
		}
	}
	return nil
}

// CheckMetric validates a metric name such as "import_power_w".
func CheckMetric(m string) error {
	if !metricRE.MatchString(m) {
		return errs.E(errs.Invalid, "metric must be 1-64 lower-case letters, digits, '.', '_' or '-'")
	}
	return nil
}

// CheckUnit validates a unit such as "W", "Wh" or "°C".
func CheckUnit(u string) error {
	if !unitRE.MatchString(u) {
		return errs.E(errs.Invalid, "unit must be at most 16 simple characters")
	}
	return nil
}

// ValidID reports whether s has the shape of an ID generated by NewID.
func ValidID(s string) bool { return idRE.MatchString(s) }

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a fresh random ID with the given three-letter prefix
// ("ten", "sub", "sit", "dev", "con", "str"), drawing 100 bits from rand.
func NewID(rand io.Reader, prefix string) (string, error) {
	var b [13]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return "", fmt.Errorf("registry: new id: %w", err)
	}
	return prefix + "_" + idEncoding.EncodeToString(b[:])[:20], nil
}

// ProfileAD is the associated data that binds a sealed Profile to its
// tenant and subject.
func ProfileAD(t TenantID, s SubjectID) []byte {
	return []byte("custos/profile/v1\x00" + string(t) + "\x00" + string(s))
}
