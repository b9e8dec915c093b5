// Package api holds the JSON shapes of the broker's HTTP API v1, shared by the server
// (broker/server) and the Go client (broker/client). Field names are the contract documented in
// DESIGN.md and README.md: extend, never rename.
package api
