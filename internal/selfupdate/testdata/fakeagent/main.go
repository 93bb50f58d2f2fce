// Command fakeagent is a stand-in for custos-agent in the self-update
// process tests: it runs the real selfupdate flow (recover, check, apply
// with a trial run, exec) with a version and a trial behaviour set at
// link time, and logs what each process did to $FAKE_LOG.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/custos-iot/custos/internal/selfupdate"
)

var (
	version = "v0.0.0"
	mode    = "ok" // ok, crash or hang during the trial
)

func logf(format string, args ...any) {
	f, err := os.OpenFile(os.Getenv("FAKE_LOG"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(f, format+"\n", args...)
	f.Close()
}

func main() {
	if marker := selfupdate.TrialMarker(); marker != "" {
		logf("trial %s", version)
		switch mode {
		case "crash":
			os.Exit(3)
		case "hang":
			select {}
		}
		resp, err := http.Get(os.Getenv("FAKE_HEALTH")) // "a successful hub sync"
		if err != nil || resp.StatusCode != http.StatusOK {
			os.Exit(4)
		}
		if err := selfupdate.ReportHealthy(marker, version); err != nil {
			os.Exit(5)
		}
		return
	}
	logf("start %s", version)
	exe, err := selfupdate.Executable()
	if err != nil {
		panic(err)
	}
	dir := os.Getenv("FAKE_DIR")
	if restored, err := selfupdate.Recover(exe, dir); err != nil {
		logf("recover error: %v", err)
		os.Exit(2)
	} else if restored {
		logf("recovered")
		panic(selfupdate.Exec(exe))
	}
	u, err := selfupdate.Check(selfupdate.Config{
		RootFile: os.Getenv("FAKE_ROOT"), Dir: dir, URL: os.Getenv("FAKE_URL"), Version: version,
	})
	if err != nil {
		logf("check error: %v", err)
		os.Exit(2)
	}
	if u == nil {
		logf("up to date %s", version)
		return
	}
	timeout, _ := time.ParseDuration(os.Getenv("FAKE_TIMEOUT"))
	a := &selfupdate.Apply{Exe: exe, Args: os.Args[1:], Dir: dir, Previous: version, Timeout: timeout}
	err = a.Run(context.Background(), u)
	var rb *selfupdate.RolledBack
	switch {
	case err == nil:
		logf("updated %s -> %s", version, u.Version)
	case errors.As(err, &rb):
		logf("rolled back %s", rb.Version)
	default:
		logf("apply error: %v", err)
		os.Exit(2)
	}
	panic(selfupdate.Exec(exe))
}
