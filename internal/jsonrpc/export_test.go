package jsonrpc

// Work is what one scan did (see work).
type Work = work

// ScanWork scans body as Parse (strict) or Split would and returns the scan's count of work.
func ScanWork(body []byte, strict bool) (Work, error) {
	var w work
	_, _, _, err := scanBody(body, strict, "", &w)
	return w, err
}
