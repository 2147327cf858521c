// Package stats summarises samples: percentiles of one run's latencies, and
// the median and spread of a figure across repeated runs.
package stats

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 ≤ p ≤ 100) of sorted, which must be
// in ascending order. It interpolates linearly between the two closest ranks
// (the method Hyndman and Fan call type 7, numpy's and R's default), so the
// 0th percentile is the minimum, the 100th the maximum and the 50th the
// median. It returns NaN for an empty slice or a p outside [0, 100].
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 || !(p >= 0 && p <= 100) {
		return math.NaN()
	}
	rank := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	if lo == hi {
		return sorted[lo]
	}
	frac := rank - float64(lo)
	return sorted[lo] + frac*(sorted[hi]-sorted[lo])
}

// Median returns the median of xs (NaN when empty). xs is not modified.
func Median(xs []float64) float64 {
	return Percentile(sortedCopy(xs), 50)
}

// Summary is the median and spread of a set of samples.
type Summary struct {
	N      int
	Min    float64
	Q1     float64 // 25th percentile
	Median float64
	Q3     float64 // 75th percentile
	Max    float64
}

// Summarize computes the Summary of xs; every field but N is NaN when xs is
// empty. NaN samples are left out. xs is not modified.
func Summarize(xs []float64) Summary {
	s := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	slices.Sort(s)
	return Summary{
		N:      len(s),
		Min:    Percentile(s, 0),
		Q1:     Percentile(s, 25),
		Median: Percentile(s, 50),
		Q3:     Percentile(s, 75),
		Max:    Percentile(s, 100),
	}
}

// IQR is the interquartile range, Q3 − Q1.
func (s Summary) IQR() float64 { return s.Q3 - s.Q1 }

// Range is the full spread, Max − Min.
func (s Summary) Range() float64 { return s.Max - s.Min }

// Scale is s in another unit: every figure but N multiplied by k (µs to ms: 1e-3).
func (s Summary) Scale(k float64) Summary {
	return Summary{N: s.N, Min: s.Min * k, Q1: s.Q1 * k, Median: s.Median * k, Q3: s.Q3 * k, Max: s.Max * k}
}

// Micros converts durations to microseconds, the unit latencies are
// summarised in.
func Micros(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Microsecond)
	}
	return out
}

// Latency holds the percentiles of one run's latencies, in microseconds.
type Latency struct {
	P50, P90, P99, Max float64
}

// Latencies computes the percentiles of ds (NaN fields when empty).
func Latencies(ds []time.Duration) Latency {
	s := Micros(ds)
	slices.Sort(s)
	return Latency{
		P50: Percentile(s, 50),
		P90: Percentile(s, 90),
		P99: Percentile(s, 99),
		Max: Percentile(s, 100),
	}
}

func sortedCopy(xs []float64) []float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s
}
