// Package version holds the version of the herald binary.
package version

import "runtime/debug"

// Version is stamped at build time:
//
//	go build -ldflags "-X github.com/heraldmq/herald/internal/version.Version=v0.1.0"
//
// Empty: Get falls back to the module version of a `go install`ed binary, else "dev".
var Version = ""

// Get returns the version of this binary: the stamped Version, the main module's version, or "dev".
func Get() string {
	if Version != "" {
		return Version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "dev"
}
