package tokens

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// offlineChildEnv marks the child process of TestVocabulariesLoadOffline.
const offlineChildEnv = "ARCANE_TOKENS_OFFLINE_CHILD"

// TestVocabulariesLoadOffline loads both vocabularies in a fresh process,
// because tiktoken-go caches a parsed vocabulary for the life of a process
// and this one may already hold them. The child's tiktoken cache directories
// and temp dir point at an empty directory and its proxy at a closed port,
// so the default loader, had it been used, could neither find a cached copy
// nor download one; the test passes only if the child loaded and counted and
// wrote nothing there. It also reports what a first load costs.
func TestVocabulariesLoadOffline(t *testing.T) {
	if os.Getenv(offlineChildEnv) == "1" {
		loadAndCountInChild()
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestVocabulariesLoadOffline$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		offlineChildEnv+"=1",
		"TIKTOKEN_CACHE_DIR="+dir,
		"DATA_GYM_CACHE_DIR="+dir,
		"TMPDIR="+dir,
		"HTTPS_PROXY=http://127.0.0.1:9",
		"HTTP_PROXY=http://127.0.0.1:9",
		"NO_PROXY=",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child failed: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "load ") || strings.HasPrefix(line, "count ") {
			t.Log(line)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("the child wrote %s into the cache directory", e.Name())
	}
}

func loadAndCountInChild() {
	c := NewCounter()
	for _, model := range []string{o200kModel, cl100kModel} {
		before := heapInUse()
		start := time.Now()
		if err := c.Preload(model); err != nil {
			fmt.Printf("FAIL: %v\n", err)
			os.Exit(1)
		}
		took := time.Since(start)
		fmt.Printf("load %s: %v, heap +%.1f MB\n", EncodingFor(model), took.Round(time.Millisecond), float64(heapInUse()-before)/(1<<20))
	}
	for _, model := range []string{o200kModel, cl100kModel} {
		n := c.Count(model, []byte("tiktoken is great!"))
		fmt.Printf("count %s: %d tokens\n", EncodingFor(model), n)
		if n != 6 {
			fmt.Println("FAIL: want 6")
			os.Exit(1)
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
