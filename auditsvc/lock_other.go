//go:build !unix

package auditsvc

import "os"

// lockFile is a no-op where flock is unavailable: run one auditsvc per log directory.
func lockFile(*os.File) error { return nil }
