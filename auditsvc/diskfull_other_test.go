//go:build !linux

package auditsvc_test

import "testing"

// smallDisk is Linux only; elsewhere the test uses the FailWrites hook.
func smallDisk(t *testing.T) (string, func()) {
	t.Helper()
	return t.TempDir(), nil
}
