package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/seal/pkcs11"
)

// fileConfig is the hub's configuration file (JSON). Every field is
// optional; see docs/configuration.md.
type fileConfig struct {
	DataDir        string   `json:"data_dir"`
	PostgresDSN    string   `json:"postgres_dsn"`
	PostgresSchema string   `json:"postgres_schema"`
	APIAddr        string   `json:"api_addr"`
	DeviceAddr     string   `json:"device_addr"`
	Names          []string `json:"names"`
	DeviceURL      string   `json:"device_url"`
	EnrolTokenTTL  string   `json:"enrol_token_ttl"`
	CertLifetime   string   `json:"cert_lifetime"`
	LogLevel       string   `json:"log_level"`
	KeyDir         string   `json:"key_dir"`
	KEKFile        string   `json:"kek_file"`
	HSMModule      string   `json:"hsm_module"`
	HSMToken       string   `json:"hsm_token"`
	HSMKeyLabel    string   `json:"hsm_key_label"`
	AuditWitnesses []string `json:"audit_witnesses"`
}

func newServe() *cobra.Command {
	var configFile, tokenFile string
	var fc fileConfig
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the hub",
		Long: `Run the hub: the operator API (HTTPS) and the device endpoint (TLS 1.3, client
certificates required). Settings come from, in increasing precedence: defaults, the
configuration file (--config, JSON), environment variables CUSTOS_<SETTING> (e.g.
CUSTOS_DATA_DIR, CUSTOS_POSTGRES_DSN), and flags.

On the first start of an empty store the hub creates its CA and an operator token,
which it prints once (and writes to --initial-token-file if given).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var file fileConfig
			if configFile != "" {
				b, err := os.ReadFile(configFile)
				if err != nil {
					return err
				}
				dec := json.NewDecoder(strings.NewReader(string(b)))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&file); err != nil {
					return fmt.Errorf("config %s: %w", configFile, err)
				}
			}
			cfg, err := resolveConfig(cmd, file, fc)
			if err != nil {
				return err
			}
			h, err := hub.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer h.Close()
			if h.InitialToken != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "First start: created the operator token (shown once, stored only as a hash):\n\n  %s\n\n", h.InitialToken)
				if tokenFile != "" {
					if err := os.WriteFile(tokenFile, []byte(h.InitialToken+"\n"), 0o600); err != nil {
						return err
					}
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "custos hub: API %s, device endpoint %s, CA %s\n", h.APIURL(), h.DeviceURL(), h.CAFile())
			return h.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", os.Getenv("CUSTOS_CONFIG"), "configuration file (JSON)")
	f.StringVar(&tokenFile, "initial-token-file", "", "on first start, also write the operator token to this file (mode 0600)")
	f.StringVar(&fc.DataDir, "data-dir", "", "data directory (default custos-data)")
	f.StringVar(&fc.PostgresDSN, "postgres-dsn", "", "use PostgreSQL at this DSN instead of the embedded SQLite store")
	f.StringVar(&fc.PostgresSchema, "postgres-schema", "", "PostgreSQL schema (default custos)")
	f.StringVar(&fc.APIAddr, "api-addr", "", "operator API listen address (default 127.0.0.1:8443)")
	f.StringVar(&fc.DeviceAddr, "device-addr", "", "device endpoint listen address (default :8444)")
	f.StringSliceVar(&fc.Names, "name", nil, "DNS name or IP of the hub in its certificate (repeatable; default localhost,127.0.0.1,::1)")
	f.StringVar(&fc.DeviceURL, "device-url", "", "device endpoint URL announced to connectors (default https://<first name>:<device port>)")
	f.StringVar(&fc.EnrolTokenTTL, "enrol-token-ttl", "", "validity of enrolment tokens (default 24h)")
	f.StringVar(&fc.CertLifetime, "cert-lifetime", "", "lifetime of connector certificates (default 24h)")
	f.StringVar(&fc.LogLevel, "log-level", "", "debug, info, warn or error (default info)")
	f.StringVar(&fc.KeyDir, "key-dir", "", "key store directory, kept apart from the data (default <data-dir>/keys)")
	f.StringVar(&fc.KEKFile, "kek-file", "", "local key-encryption key file (default <key-dir>/kek.json; created on first start)")
	f.StringVar(&fc.HSMModule, "hsm-module", "", "PKCS#11 module: take the key-encryption key from an HSM (PIN in CUSTOS_HSM_PIN)")
	f.StringVar(&fc.HSMToken, "hsm-token", "", "PKCS#11 token label")
	f.StringVar(&fc.HSMKeyLabel, "hsm-key-label", "custos-kek", "PKCS#11 key label (created if missing)")
	f.StringSliceVar(&fc.AuditWitnesses, "audit-witness", nil, "public key of an audit witness whose cosignatures the hub accepts (repeatable)")
	return cmd
}

// resolveConfig layers defaults < file < environment < flags.
func resolveConfig(cmd *cobra.Command, file, flags fileConfig) (hub.Config, error) {
	pick := func(flag, env, fromFlag, fromFile string) string {
		if cmd.Flags().Changed(flag) {
			return fromFlag
		}
		if v := os.Getenv(env); v != "" {
			return v
		}
		return fromFile
	}
	c := fileConfig{
		DataDir:        pick("data-dir", "CUSTOS_DATA_DIR", flags.DataDir, file.DataDir),
		PostgresDSN:    pick("postgres-dsn", "CUSTOS_POSTGRES_DSN", flags.PostgresDSN, file.PostgresDSN),
		PostgresSchema: pick("postgres-schema", "CUSTOS_POSTGRES_SCHEMA", flags.PostgresSchema, file.PostgresSchema),
		APIAddr:        pick("api-addr", "CUSTOS_API_ADDR", flags.APIAddr, file.APIAddr),
		DeviceAddr:     pick("device-addr", "CUSTOS_DEVICE_ADDR", flags.DeviceAddr, file.DeviceAddr),
		DeviceURL:      pick("device-url", "CUSTOS_DEVICE_URL", flags.DeviceURL, file.DeviceURL),
		EnrolTokenTTL:  pick("enrol-token-ttl", "CUSTOS_ENROL_TOKEN_TTL", flags.EnrolTokenTTL, file.EnrolTokenTTL),
		CertLifetime:   pick("cert-lifetime", "CUSTOS_CERT_LIFETIME", flags.CertLifetime, file.CertLifetime),
		LogLevel:       pick("log-level", "CUSTOS_LOG_LEVEL", flags.LogLevel, file.LogLevel),
		KeyDir:         pick("key-dir", "CUSTOS_KEY_DIR", flags.KeyDir, file.KeyDir),
		KEKFile:        pick("kek-file", "CUSTOS_KEK_FILE", flags.KEKFile, file.KEKFile),
		HSMModule:      pick("hsm-module", "CUSTOS_HSM_MODULE", flags.HSMModule, file.HSMModule),
		HSMToken:       pick("hsm-token", "CUSTOS_HSM_TOKEN", flags.HSMToken, file.HSMToken),
		HSMKeyLabel:    pick("hsm-key-label", "CUSTOS_HSM_KEY_LABEL", flags.HSMKeyLabel, file.HSMKeyLabel),
		Names:          file.Names,
		AuditWitnesses: file.AuditWitnesses,
	}
	if v := os.Getenv("CUSTOS_AUDIT_WITNESSES"); v != "" {
		c.AuditWitnesses = strings.Split(v, ",")
	}
	if cmd.Flags().Changed("audit-witness") {
		c.AuditWitnesses = flags.AuditWitnesses
	}
	if v := os.Getenv("CUSTOS_NAMES"); v != "" {
		c.Names = strings.Split(v, ",")
	}
	if cmd.Flags().Changed("name") {
		c.Names = flags.Names
	}
	cfg := hub.Config{
		DataDir: c.DataDir, PostgresDSN: c.PostgresDSN, PostgresSchema: c.PostgresSchema,
		APIAddr: c.APIAddr, DeviceAddr: c.DeviceAddr, Names: c.Names, DeviceURL: c.DeviceURL,
		KeyDir: c.KeyDir, KEKFile: c.KEKFile, AuditWitnesses: c.AuditWitnesses,
	}
	if c.HSMModule != "" {
		if c.HSMToken == "" {
			return cfg, fmt.Errorf("--hsm-token is required with --hsm-module")
		}
		label := c.HSMKeyLabel
		if label == "" {
			label = "custos-kek"
		}
		// The PIN comes only from the environment: never from a flag
		// (process list) or the configuration file.
		cfg.HSM = &pkcs11.Config{Module: c.HSMModule, TokenLabel: c.HSMToken, PIN: os.Getenv("CUSTOS_HSM_PIN"), KeyLabel: label}
	}
	var err error
	if cfg.EnrolTokenTTL, err = optDuration("enrol token TTL", c.EnrolTokenTTL); err != nil {
		return cfg, err
	}
	if cfg.CertLifetime, err = optDuration("certificate lifetime", c.CertLifetime); err != nil {
		return cfg, err
	}
	var level slog.Level
	if c.LogLevel != "" {
		if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
			return cfg, fmt.Errorf("log level must be debug, info, warn or error")
		}
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return cfg, nil
}

func optDuration(what, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s must be a positive duration such as 24h, got %q", what, s)
	}
	return d, nil
}
