package auditsvc_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// smallDisk mounts a 64 KiB tmpfs for the log (root only) and fills all of it but a few
// pages with a file. It returns the log's directory and a func that frees the space by
// removing the filler. The mount is undone in t.Cleanup, after the service is closed
// (cleanups run last first).
func smallDisk(t *testing.T) (string, func()) {
	t.Helper()
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=64k,mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs as root: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	// Leave two pages for the log, so that a few records fit before the disk is full.
	if _, err := f.Write(make([]byte, 64<<10-8<<10)); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(mnt, "audit"), func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
}
