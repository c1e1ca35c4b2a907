//go:build !linux

package billing

import "os"

// dsyncFlag is zero where O_DSYNC is not relied on: the journal syncs the
// file after each write instead.
const dsyncFlag = 0

// directFlag is zero where O_DIRECT is not used.
const directFlag = 0

// clearDirect does nothing where the journal is never opened with
// O_DIRECT.
func clearDirect(*os.File) error { return nil }
