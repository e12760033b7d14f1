package runtime

import (
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestPullReportsLandedBlobs takes the progress ticker out of the way and
// pulls an image: every blob that lands must still be reported, so a client
// sees the bytes of a pull however quickly it passes between two ticks (on a
// busy machine, clients saw "resolving" and then "unpacked", nothing else).
func TestPullReportsLandedBlobs(t *testing.T) {
	saved := progressInterval
	progressInterval = time.Hour
	t.Cleanup(func() { progressInterval = saved })

	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ref := reg.PushRandomImage(t, "berth/landed:1", 2, 256<<10)
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	r, err := NewContainerd(Options{Address: testenv.ContainerdAddress(t), Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })

	var mu sync.Mutex
	var events []PullProgress
	_, err = r.EnsureImage(t.Context(), ref, PullAlways, testenv.Snapshotter, func(p PullProgress) {
		mu.Lock()
		events = append(events, p)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(events) < 3 || events[0].Phase != "resolving" || events[len(events)-1].Phase != "unpacked" {
		t.Fatalf("want resolving, byte progress, unpacked; got %+v", events)
	}
	bytesSeen := events[len(events)-2]
	if bytesSeen.Phase != "unpacking" || bytesSeen.Total < 512<<10 || bytesSeen.Done != bytesSeen.Total ||
		bytesSeen.Layers != 3 || bytesSeen.LayersDone != 3 {
		t.Fatalf("the report before unpacked should count all of busybox and two 256 KiB layers as landed: %+v", events)
	}
	for i := 1; i < len(events); i++ {
		if events[i].Done < events[i-1].Done {
			t.Fatalf("progress went backwards: %+v", events)
		}
	}
}
