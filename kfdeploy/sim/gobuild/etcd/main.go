// Command etcd is etcd's own server entry point, built from go.etcd.io/etcd/server/v3 as a
// dependency so kfdeploy needs no prebuilt download (see kfdeploy/sim/binaries.py).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
