// Command etcd is the etcd server that Kubernetes v1.35 pins (go.etcd.io/etcd/server/v3),
// built from the module proxy for the test control plane. The server module has no main
// package of its own, so this calls etcdmain.Main like etcd's own main does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
