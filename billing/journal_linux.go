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
	flags, err := fcntl(f, syscall.F_GETFL, 0)
	if err == nil {
		_, err = fcntl(f, syscall.F_SETFL, flags&^syscall.O_DIRECT)
	}
	return err
}

// fcntl runs fcntl(2) on f's descriptor.
func fcntl(f *os.File, cmd, arg int) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var r uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		r, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, uintptr(cmd), uintptr(arg))
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}
