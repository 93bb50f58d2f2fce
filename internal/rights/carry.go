package rights

import (
	"archive/zip"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/datamap"
)

// Manifest is the archive's table of contents (manifest.json): which
// stores were exported, with their categories and files.
type Manifest struct {
	Tenant   string          `json:"tenant"`
	Subject  string          `json:"subject"`
	Created  time.Time       `json:"created"`
	Stores   []ManifestStore `json:"stores"`
	Comments string          `json:"comments"`
}

// ManifestStore is one store's part of an archive.
type ManifestStore struct {
	Name       string   `json:"name"`
	Categories []string `json:"categories"`
	Files      []string `json:"files"`
}

// zipSink writes one store's export into the archive under its name.
type zipSink struct {
	zw    *zip.Writer
	store string
	files []string
	now   time.Time
}

func (z *zipSink) create(name string) (io.Writer, error) {
	clean := path.Clean(name)
	if clean != name || strings.HasPrefix(clean, "/") || strings.HasPrefix(clean, "..") || clean == "." {
		return nil, fmt.Errorf("rights: bad export file name %q from store %s", name, z.store)
	}
	full := z.store + "/" + clean
	z.files = append(z.files, full)
	return z.zw.CreateHeader(&zip.FileHeader{Name: full, Method: zip.Deflate, Modified: z.now})
}

func (z *zipSink) JSON(name string, v any) error {
	w, err := z.create(name)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (z *zipSink) CSV(name string, header []string, rows [][]string) error {
	w, err := z.create(name)
	if err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(header); err != nil {
		return err
	}
	if err := cw.WriteAll(rows); err != nil {
		return err
	}
	return cw.Error()
}

// Export writes a zip archive of everything every store of the data map
// holds about the subject: one folder per store (JSON and CSV) and a
// manifest.json. progress, if set, is called after each store.
func Export(ctx context.Context, m *datamap.Map, r datamap.Ref, now time.Time, w io.Writer, progress func(done, total int)) (Manifest, error) {
	zw := zip.NewWriter(w)
	man := Manifest{Tenant: string(r.Tenant), Subject: string(r.Subject), Created: now.UTC(),
		Comments: "Every store of the hub's data map that holds personal data, exported by its own handler (GDPR art. 15 and 20). Readings are at raw resolution."}
	for i, s := range m.Stores {
		sink := &zipSink{zw: zw, store: s.Name, now: now}
		if err := s.Export(ctx, r, sink); err != nil {
			return man, fmt.Errorf("rights: export of store %s: %w", s.Name, err)
		}
		man.Stores = append(man.Stores, ManifestStore{Name: s.Name, Categories: s.Categories, Files: append([]string{}, sink.files...)})
		if progress != nil {
			progress(i+1, len(m.Stores))
		}
	}
	mw, err := zw.CreateHeader(&zip.FileHeader{Name: "manifest.json", Method: zip.Deflate, Modified: now})
	if err != nil {
		return man, err
	}
	enc := json.NewEncoder(mw)
	enc.SetIndent("", "  ")
	if err := enc.Encode(man); err != nil {
		return man, err
	}
	return man, zw.Close()
}

// Erase runs every store's erase handler in the map's order and returns
// the evidence. It stops at the first failure (the evidence so far is
// returned with the error); handlers are idempotent, so running it again
// finishes the job.
func Erase(ctx context.Context, m *datamap.Map, r datamap.Ref) ([]datamap.Erased, error) {
	var out []datamap.Erased
	for _, s := range m.Stores {
		e, err := s.Erase(ctx, r)
		if err != nil {
			return out, fmt.Errorf("rights: erasure in store %s: %w", s.Name, err)
		}
		e.Store = s.Name
		out = append(out, e)
	}
	return out, nil
}
