//go:build !race

package gatehousetest

const raceEnabled = false
