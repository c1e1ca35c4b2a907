package billing

import "syscall"

// dsyncFlag makes each write to the journal return once its data is on
// disk: one system call per batch instead of a write and an fdatasync.
const dsyncFlag = syscall.O_DSYNC
