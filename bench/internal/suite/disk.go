package suite

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// fsTypes names the file systems a data dir is likely to be on, by statfs
// magic number.
var fsTypes = map[int64]string{
	unix.EXT4_SUPER_MAGIC:      "ext4",
	unix.XFS_SUPER_MAGIC:       "xfs",
	unix.BTRFS_SUPER_MAGIC:     "btrfs",
	unix.TMPFS_MAGIC:           "tmpfs",
	unix.RAMFS_MAGIC:           "ramfs",
	unix.OVERLAYFS_SUPER_MAGIC: "overlayfs",
	unix.NFS_SUPER_MAGIC:       "nfs",
	unix.F2FS_SUPER_MAGIC:      "f2fs",
	unix.V9FS_MAGIC:            "9p",
	0x2fc12fc1:                 "zfs",
	0x6a656a63:                 "virtiofs",
}

// FSType names the file system holding dir ("unknown (0x…)" when the magic
// number is not one of the usual ones).
func FSType(dir string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", fmt.Errorf("statfs %s: %w", dir, err)
	}
	if name, ok := fsTypes[int64(st.Type)]; ok {
		return name, nil
	}
	return fmt.Sprintf("unknown (0x%x)", st.Type), nil
}

// volatile reports whether a file system keeps nothing across a power loss,
// so that fdatasync on it costs nothing and floor 3 measures nothing.
func volatile(fsType string) bool { return fsType == "tmpfs" || fsType == "ramfs" }

// describeDisk states the audit disk for the report: its file system and
// directory, and whether the gateway's data dir is on the same device. The
// notes warn of anything that makes floor 3 meaningless.
func describeDisk(diskDir, gatehouseData string) (string, []string) {
	var notes []string
	fsType, err := FSType(diskDir)
	if err != nil {
		return "unknown", []string{"audit disk: " + err.Error()}
	}
	desc := fmt.Sprintf("%s, %s", fsType, diskDir)
	if volatile(fsType) {
		notes = append(notes, fmt.Sprintf("the audit disk is %s, where fdatasync writes nothing: floor 3 and the fdatasync probes measure nothing and goal (c) is meaningless; set TMPDIR to a directory on the real disk", fsType))
	}
	if gatehouseData == "" {
		return desc + " (the gateway did not run)", notes
	}
	same, err := sameDevice(diskDir, gatehouseData)
	switch {
	case err != nil:
		notes = append(notes, "audit disk: "+err.Error())
	case same:
		desc += " (the same file system as the gateway's data dir, " + gatehouseData + ")"
	default:
		notes = append(notes, fmt.Sprintf("the gateway's data dir %s is not on the file system floor 3 and the probes write to (%s): their figures are not comparable", gatehouseData, diskDir))
	}
	return desc, notes
}

// sameDevice reports whether a and b are on the same device.
func sameDevice(a, b string) (bool, error) {
	dev := func(p string) (uint64, error) {
		fi, err := os.Stat(p)
		if err != nil {
			return 0, err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return 0, fmt.Errorf("stat %s: no device number", p)
		}
		return uint64(st.Dev), nil
	}
	da, err := dev(a)
	if err != nil {
		return false, err
	}
	db, err := dev(b)
	if err != nil {
		return false, err
	}
	return da == db, nil
}
