//go:build race

package gatehousetest

// raceEnabled: the tests run under the race detector, so the gateway is built with it too.
const raceEnabled = true
