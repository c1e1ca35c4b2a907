package billing

import "syscall"

// dsyncFlag makes each write to the journal return once its data is on
// disk: one system call per batch instead of a write and an fdatasync.
const dsyncFlag = syscall.O_DSYNC

// directFlag makes a durable journal's writes go to the disk from the
// gateway's own buffer, past the page cache: with O_DSYNC, each batch is
// then one write and the device's flush, without copying the batch into
// the cache and writing the cache back. Where the file system refuses it
// (EINVAL at open), the journal is opened without it.
const directFlag = syscall.O_DIRECT
