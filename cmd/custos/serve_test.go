package main

import (
	"testing"
	"time"
)

// TestConfigLayers: defaults < file < environment < flags, per setting.
func TestConfigLayers(t *testing.T) {
	file := fileConfig{DataDir: "/file/data", APIAddr: "127.0.0.1:1000", DeviceAddr: ":2000", CertLifetime: "2h", Names: []string{"file.example"}}
	for _, tc := range []struct {
		name  string
		env   map[string]string
		flags map[string]string
		check func(t *testing.T, data, api, dev string, life time.Duration, names []string)
	}{
		{"file only", nil, nil, func(t *testing.T, data, api, dev string, life time.Duration, names []string) {
			if data != "/file/data" || api != "127.0.0.1:1000" || dev != ":2000" || life != 2*time.Hour || names[0] != "file.example" {
				t.Errorf("got %s %s %s %v %v", data, api, dev, life, names)
			}
		}},
		{"env over file", map[string]string{"CUSTOS_DATA_DIR": "/env/data", "CUSTOS_CERT_LIFETIME": "3h", "CUSTOS_NAMES": "env.example,127.0.0.1"}, nil,
			func(t *testing.T, data, api, dev string, life time.Duration, names []string) {
				if data != "/env/data" || api != "127.0.0.1:1000" || life != 3*time.Hour || len(names) != 2 || names[0] != "env.example" {
					t.Errorf("got %s %s %v %v", data, api, life, names)
				}
			}},
		{"flag over env", map[string]string{"CUSTOS_DATA_DIR": "/env/data"}, map[string]string{"data-dir": "/flag/data", "api-addr": "127.0.0.1:3000", "name": "flag.example"},
			func(t *testing.T, data, api, dev string, life time.Duration, names []string) {
				if data != "/flag/data" || api != "127.0.0.1:3000" || dev != ":2000" || names[0] != "flag.example" {
					t.Errorf("got %s %s %s %v", data, api, dev, names)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"CUSTOS_DATA_DIR", "CUSTOS_CERT_LIFETIME", "CUSTOS_NAMES", "CUSTOS_API_ADDR"} {
				t.Setenv(k, "")
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cmd := newServe()
			var fc fileConfig
			for k, v := range tc.flags {
				if err := cmd.Flags().Set(k, v); err != nil {
					t.Fatal(err)
				}
			}
			fc.DataDir, _ = cmd.Flags().GetString("data-dir")
			fc.APIAddr, _ = cmd.Flags().GetString("api-addr")
			fc.Names, _ = cmd.Flags().GetStringSlice("name")
			cfg, err := resolveConfig(cmd, file, fc)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg.DataDir, cfg.APIAddr, cfg.DeviceAddr, cfg.CertLifetime, cfg.Names)
		})
	}
	// Bad values are refused with a message naming the setting.
	t.Setenv("CUSTOS_CERT_LIFETIME", "forever")
	if _, err := resolveConfig(newServe(), fileConfig{}, fileConfig{}); err == nil {
		t.Error("a malformed certificate lifetime was accepted")
	}
}
