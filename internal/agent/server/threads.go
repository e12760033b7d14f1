package server

import (
	"runtime"
	"sync"
)

// agentThreads is how many OS threads the agent makes when it starts.
//
// The agent shares its workspace's process limit with the workload, and
// the limit counts threads. A fork bomb fills it; a Go program that then
// needs one more thread (a goroutine blocked in a system call while others
// wait to run) cannot make it, and the runtime ends the program: the
// workspace's init, and with it the workspace. On a busy host that
// happened (an exec's stream ended with the workspace). The runtime keeps
// the threads it made and reuses an idle one before it makes another, so
// threads made while the limit had room are there when it has none.
const agentThreads = 16

// reserveThreads makes the runtime hold at least n OS threads: n
// goroutines each take a thread for themselves, so the runtime must make
// n, and give them back idle.
func reserveThreads(n int) {
	var holding sync.WaitGroup
	release := make(chan struct{})
	for range n {
		holding.Add(1)
		go func() {
			runtime.LockOSThread()
			holding.Done()
			<-release
			runtime.UnlockOSThread()
		}()
	}
	holding.Wait()
	close(release)
}
