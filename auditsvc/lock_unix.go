//go:build unix

package auditsvc

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive advisory lock on f, so that two processes never append to the
// same log (which would fork its chain). The lock goes with the file's close.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
