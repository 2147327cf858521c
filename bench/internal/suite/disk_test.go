package suite

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDescribeDisk(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := filepath.Join(dir, "gatehouse-data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	fsType, err := FSType(dir)
	if err != nil {
		t.Fatal(err)
	}
	desc, notes := describeDisk(dir, data)
	if !strings.HasPrefix(desc, fsType+", "+dir) || !strings.Contains(desc, "the same file system as the gateway's data dir") {
		t.Errorf("desc = %q", desc)
	}
	if volatile(fsType) != (len(notes) == 1) {
		t.Errorf("%s: notes = %q", fsType, notes)
	}

	if _, notes := describeDisk(dir, filepath.Join(dir, "missing")); len(notes) == 0 || !strings.Contains(notes[len(notes)-1], "missing") {
		t.Errorf("a data dir that does not exist gives notes %q", notes)
	}
	if _, err := FSType(filepath.Join(dir, "missing")); err == nil {
		t.Error("FSType of a missing directory succeeded")
	}
	// /dev/shm is tmpfs on Linux: fdatasync there is free, and the report
	// must say so.
	if shm, err := FSType("/dev/shm"); err == nil && shm == "tmpfs" {
		if _, notes := describeDisk("/dev/shm", ""); len(notes) != 1 || !strings.Contains(notes[0], "measure nothing") {
			t.Errorf("tmpfs notes = %q", notes)
		}
		// And it is another file system than the test's temporary dir.
		if same, err := sameDevice(dir, "/dev/shm"); err == nil && !same {
			if _, notes := describeDisk(dir, "/dev/shm"); len(notes) == 0 || !strings.Contains(notes[len(notes)-1], "not on the file system") {
				t.Errorf("data dir on another file system: notes %q", notes)
			}
		}
	}
}
