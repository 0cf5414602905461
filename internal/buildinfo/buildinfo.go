// Package buildinfo says which build of a binary is running, for -version, logs and
// the build_info metric.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is set at link time by the Makefile (-X .../buildinfo.Version=v1.2.3); when it
// is not, the VCS revision Go stamps into the binary is used.
var Version = ""

// String is "NAME VERSION (revision, go version)".
func String(name string) string {
	return fmt.Sprintf("%s %s (%s, %s)", name, version(), revision(), runtime.Version())
}

// Short is the version alone.
func Short() string { return version() }

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func revision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown revision"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown revision"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
