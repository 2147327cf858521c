//go:build !linux

package auditsvc

import "os"

// dataFile is the log's file; outside Linux it is made durable with os.File.Sync.
type dataFile struct{ *os.File }
