package stats_test

import (
	"math"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// same reports whether two figures are equal, counting NaN as equal to NaN and
// allowing for floating-point rounding.
func same(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b))
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	nan := math.NaN()
	oneToTen := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		name   string
		sorted []float64
		p      float64
		want   float64
	}{
		{name: "empty", sorted: nil, p: 50, want: nan},
		{name: "single p0", sorted: []float64{7}, p: 0, want: 7},
		{name: "single p50", sorted: []float64{7}, p: 50, want: 7},
		{name: "single p100", sorted: []float64{7}, p: 100, want: 7},
		{name: "min", sorted: oneToTen, p: 0, want: 1},
		{name: "max", sorted: oneToTen, p: 100, want: 10},
		{name: "median even count", sorted: oneToTen, p: 50, want: 5.5},
		{name: "median odd count", sorted: []float64{1, 2, 3, 4, 100}, p: 50, want: 3},
		{name: "p25 interpolated", sorted: oneToTen, p: 25, want: 3.25},
		{name: "p75 interpolated", sorted: oneToTen, p: 75, want: 7.75},
		{name: "p90", sorted: oneToTen, p: 90, want: 9.1},
		{name: "p99", sorted: oneToTen, p: 99, want: 9.91},
		{name: "two values p50", sorted: []float64{10, 20}, p: 50, want: 15},
		{name: "two values p99", sorted: []float64{10, 20}, p: 99, want: 19.9},
		{name: "exact rank", sorted: []float64{0, 10, 20, 30, 40}, p: 75, want: 30},
		{name: "ties", sorted: []float64{5, 5, 5, 5}, p: 37, want: 5},
		{name: "negative values", sorted: []float64{-4, -2, 0}, p: 50, want: -2},
		{name: "p below range", sorted: oneToTen, p: -1, want: nan},
		{name: "p above range", sorted: oneToTen, p: 100.5, want: nan},
		{name: "p NaN", sorted: oneToTen, p: nan, want: nan},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := stats.Percentile(tc.sorted, tc.p); !same(got, tc.want) {
				t.Fatalf("Percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

func TestPercentile1000(t *testing.T) {
	t.Parallel()
	// 1..1000: the p99 of a closed-loop run of 1,000 calls lies between the
	// 990th and 991st slowest-from-the-bottom samples.
	xs := make([]float64, 1000)
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	tests := []struct {
		p, want float64
	}{
		{p: 50, want: 500.5},
		{p: 99, want: 990.01},
		{p: 99.9, want: 999.001},
	}
	for _, tc := range tests {
		if got := stats.Percentile(xs, tc.p); !same(got, tc.want) {
			t.Errorf("Percentile(1..1000, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		xs   []float64
		want float64
	}{
		{name: "empty", xs: nil, want: math.NaN()},
		{name: "one", xs: []float64{3}, want: 3},
		{name: "unsorted odd", xs: []float64{9, 1, 5}, want: 5},
		{name: "unsorted even", xs: []float64{4, 1, 3, 2}, want: 2.5},
		{name: "outlier does not move it", xs: []float64{1, 2, 3, 4, 1e9}, want: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := append([]float64(nil), tc.xs...)
			if got := stats.Median(tc.xs); !same(got, tc.want) {
				t.Fatalf("Median(%v) = %v, want %v", tc.xs, got, tc.want)
			}
			for i := range before {
				if before[i] != tc.xs[i] {
					t.Fatalf("Median modified its input: %v, was %v", tc.xs, before)
				}
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	nan := math.NaN()
	tests := []struct {
		name      string
		xs        []float64
		want      stats.Summary
		wantIQR   float64
		wantRange float64
	}{
		{
			name:      "empty",
			xs:        nil,
			want:      stats.Summary{N: 0, Min: nan, Q1: nan, Median: nan, Q3: nan, Max: nan},
			wantIQR:   nan,
			wantRange: nan,
		},
		{
			name:      "five repeats",
			xs:        []float64{120, 100, 140, 110, 130},
			want:      stats.Summary{N: 5, Min: 100, Q1: 110, Median: 120, Q3: 130, Max: 140},
			wantIQR:   20,
			wantRange: 40,
		},
		{
			name:      "six repeats",
			xs:        []float64{6, 1, 5, 2, 4, 3},
			want:      stats.Summary{N: 6, Min: 1, Q1: 2.25, Median: 3.5, Q3: 4.75, Max: 6},
			wantIQR:   2.5,
			wantRange: 5,
		},
		{
			name:      "NaN samples are left out",
			xs:        []float64{nan, 3, 1, nan, 2},
			want:      stats.Summary{N: 3, Min: 1, Q1: 1.5, Median: 2, Q3: 2.5, Max: 3},
			wantIQR:   1,
			wantRange: 2,
		},
		{
			name:      "identical",
			xs:        []float64{7, 7, 7},
			want:      stats.Summary{N: 3, Min: 7, Q1: 7, Median: 7, Q3: 7, Max: 7},
			wantIQR:   0,
			wantRange: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := stats.Summarize(tc.xs)
			if got.N != tc.want.N || !same(got.Min, tc.want.Min) || !same(got.Q1, tc.want.Q1) ||
				!same(got.Median, tc.want.Median) || !same(got.Q3, tc.want.Q3) || !same(got.Max, tc.want.Max) {
				t.Fatalf("Summarize(%v) = %+v, want %+v", tc.xs, got, tc.want)
			}
			if !same(got.IQR(), tc.wantIQR) {
				t.Errorf("IQR = %v, want %v", got.IQR(), tc.wantIQR)
			}
			if !same(got.Range(), tc.wantRange) {
				t.Errorf("Range = %v, want %v", got.Range(), tc.wantRange)
			}
		})
	}
}

func TestSummaryScale(t *testing.T) {
	t.Parallel()
	got := stats.Summarize([]float64{1500, 2500, 4000}).Scale(1e-3)
	want := stats.Summary{N: 3, Min: 1.5, Q1: 2, Median: 2.5, Q3: 3.25, Max: 4}
	if got.N != want.N || !same(got.Min, want.Min) || !same(got.Q1, want.Q1) || !same(got.Median, want.Median) || !same(got.Q3, want.Q3) || !same(got.Max, want.Max) {
		t.Fatalf("Scale(1e-3) = %+v, want %+v", got, want)
	}
	if empty := stats.Summarize(nil).Scale(1e-3); empty.N != 0 || !math.IsNaN(empty.Median) {
		t.Errorf("an empty summary scaled = %+v, want N 0 and NaN figures", empty)
	}
}

func TestLatencies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ds   []time.Duration
		want stats.Latency
	}{
		{
			name: "empty",
			ds:   nil,
			want: stats.Latency{P50: math.NaN(), P90: math.NaN(), P99: math.NaN(), Max: math.NaN()},
		},
		{
			name: "unsorted microseconds",
			ds:   []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond},
			want: stats.Latency{P50: 2000, P90: 2800, P99: 2980, Max: 3000},
		},
		{
			name: "sub-microsecond",
			ds:   []time.Duration{500 * time.Nanosecond},
			want: stats.Latency{P50: 0.5, P90: 0.5, P99: 0.5, Max: 0.5},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := stats.Latencies(tc.ds)
			if !same(got.P50, tc.want.P50) || !same(got.P90, tc.want.P90) || !same(got.P99, tc.want.P99) || !same(got.Max, tc.want.Max) {
				t.Fatalf("Latencies(%v) = %+v, want %+v", tc.ds, got, tc.want)
			}
		})
	}
}
