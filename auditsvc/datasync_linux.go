package auditsvc

import (
	"os"
	"syscall"
)

// dataFile is the log's file, made durable with fdatasync instead of fsync. The log only
// appends and truncates: fdatasync flushes the data and every metadata change needed to read
// it back, the file's size included (fdatasync(2)), and skips what is not, like the
// modification time, which fsync would journal as well.
type dataFile struct{ *os.File }

// Sync is fdatasync(2).
func (f dataFile) Sync() error {
	rc, err := f.SyscallConn()
	if err != nil {
		return f.File.Sync()
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = syscall.Fdatasync(int(fd)); serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
