// Package datamap is the register of every place the hub keeps personal
// data: each store with its data categories, the database tables and
// on-disk locations it covers, and the two handlers the data subject's
// rights need — one that exports a subject's data from it, one that erases
// it (or records, with the legal reason, why it is kept).
//
// The hub builds its map (internal/hub); a test there enumerates every
// table of the migrated schemas and every entry of the data directory and
// fails when one is covered by no store and not declared free of personal
// data, or when a store lacks a handler. The package holds no data and does
// no I/O itself.
package datamap

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/custos-iot/custos/internal/registry"
)

// Ref names the data subject a handler works on.
type Ref struct {
	Tenant  registry.TenantID
	Subject registry.SubjectID
}

// Sink receives a store's export: named JSON documents and CSV tables.
// Names are relative paths such as "readings/str_1.csv".
type Sink interface {
	JSON(name string, v any) error
	CSV(name string, header []string, rows [][]string) error
}

// Erased is the evidence of one store's erase handler: how many items
// went, and a note (what was kept and why). It never holds erased data.
type Erased struct {
	Store string `json:"store"`
	Items int    `json:"items"`
	Note  string `json:"note,omitempty"`
}

// Store is one registered place holding personal data.
type Store struct {
	// Name identifies the store, e.g. "readings".
	Name string
	// Categories are the data categories it holds.
	Categories []string
	// Tables are the database tables it covers.
	Tables []string
	// Paths are the entries of the data directory it covers (e.g. "exports").
	Paths []string
	// Export writes the subject's data from this store. Must be non-nil.
	Export func(ctx context.Context, r Ref, out Sink) error
	// Erase erases the subject's data from this store, idempotently (a
	// second call finds nothing and succeeds). Must be non-nil.
	Erase func(ctx context.Context, r Ref) (Erased, error)
}

// Map is the data map. Erasure runs the stores' Erase handlers in order.
type Map struct {
	Stores []Store
	// NoPersonalData declares tables and data-directory entries that hold
	// no personal data, each with the reason. One line per table.
	NoPersonalData map[string]string
}

// Check reports every table or data-directory entry that no store covers
// and no declaration exempts, and every store without both handlers.
func (m *Map) Check(tables, paths []string) []error {
	var errs []error
	covered := map[string]string{}
	for _, s := range m.Stores {
		if s.Export == nil {
			errs = append(errs, fmt.Errorf("data map: store %q has no export handler", s.Name))
		}
		if s.Erase == nil {
			errs = append(errs, fmt.Errorf("data map: store %q has no erase handler", s.Name))
		}
		if len(s.Categories) == 0 {
			errs = append(errs, fmt.Errorf("data map: store %q names no data category", s.Name))
		}
		for _, t := range append(slices.Clone(s.Tables), s.Paths...) {
			covered[t] = s.Name
		}
	}
	for _, t := range tables {
		if _, ok := covered[t]; !ok && m.NoPersonalData[t] == "" {
			errs = append(errs, fmt.Errorf("data map: table %q is in no store of the data map; register it (internal/hub/datamap.go) with export and erase handlers, or declare it in NoPersonalData with the reason", t))
		}
	}
	for _, p := range paths {
		if _, ok := covered[p]; !ok && m.NoPersonalData[p] == "" {
			errs = append(errs, fmt.Errorf("data map: data-directory entry %q is in no store of the data map; register it or declare it in NoPersonalData", p))
		}
	}
	return errs
}

// Entry is a store as `custos datamap --json` describes it.
type Entry struct {
	Name       string   `json:"name"`
	Categories []string `json:"categories"`
	Tables     []string `json:"tables,omitempty"`
	Paths      []string `json:"paths,omitempty"`
	Export     bool     `json:"export"`
	Erase      bool     `json:"erase"`
}

// Exempt is a declaration that a table or path holds no personal data.
type Exempt struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Description is the data map without its handlers.
type Description struct {
	Stores         []Entry  `json:"stores"`
	NoPersonalData []Exempt `json:"no_personal_data"`
}

// Describe returns the map's description.
func (m *Map) Describe() Description {
	d := Description{Stores: []Entry{}, NoPersonalData: []Exempt{}}
	for _, s := range m.Stores {
		d.Stores = append(d.Stores, Entry{Name: s.Name, Categories: s.Categories, Tables: s.Tables, Paths: s.Paths, Export: s.Export != nil, Erase: s.Erase != nil})
	}
	for k, v := range m.NoPersonalData {
		d.NoPersonalData = append(d.NoPersonalData, Exempt{k, v})
	}
	sort.Slice(d.NoPersonalData, func(i, j int) bool { return d.NoPersonalData[i].Name < d.NoPersonalData[j].Name })
	return d
}
