package dashboard

import "testing"

func TestAssetVersionIsTheSameEveryTime(t *testing.T) {
	// Map iteration order varies from one range to the next: a version
	// that followed it would differ between restarts and between the
	// instances behind one load balancer, and a page from one would link
	// assets the other does not call current.
	for range 50 {
		if v := versionOf(static); v != assetVersion {
			t.Fatalf("version %s, then %s", assetVersion, v)
		}
	}
}
