package billing

import (
	"os"
	"syscall"
)

// dsyncFlag makes each write to the journal return once its data is on
// disk: one system call per batch instead of a write and an fdatasync.
const dsyncFlag = syscall.O_DSYNC

// directFlag makes a durable journal's writes go to the disk from the
// gateway's own buffer, past the page cache: with O_DSYNC, each batch is
// then one write and the device's flush, without copying the batch into
// the cache and writing the cache back. Where the file system refuses it
// (EINVAL at open), the journal is opened without it.
const directFlag = syscall.O_DIRECT

// clearDirect turns O_DIRECT off on f, leaving its other flags.
func clearDirect(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	err = rc.Control(func(fd uintptr) {
		flags, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		if e == 0 {
			_, _, e = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETFL, flags&^syscall.O_DIRECT)
		}
		errno = e
	})
	if err == nil && errno != 0 {
		err = errno
	}
	return err
}
