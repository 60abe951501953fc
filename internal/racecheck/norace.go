//go:build !race

// Package racecheck tells tests whether the race detector is on, for the
// few that move so much memory that it makes them impractical (it slows
// large copies by 20-60x on small virtual machines, where every page the
// detector's shadow memory touches first is a costly fault). Such tests
// still run in the suite's pass without it.
package racecheck

// Enabled reports whether the binary was built with the race detector.
const Enabled = false
