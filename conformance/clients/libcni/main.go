// twill-libcni drives CNI plugins through libcni, the library containerd, CRI-O and podman link:
// it loads a conflist by network name from a directory and runs ADD, CHECK or DEL of one
// attachment. libcni caches the ADD result and config under the cache directory and feeds the
// cached result to CHECK and DEL as prevResult, exactly as a runtime does.
//
// Usage:
//
//	twill-libcni add|check|del -confdir DIR -net NAME -netns PATH -id ID [-ifname eth0]
//	             -path DIR[:DIR...] -cachedir DIR [-portmappings JSON]
//
// ADD prints the (converted) result of the whole chain on stdout. Any failure prints libcni's
// error on stderr and exits 1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: %s add|check|del [flags]", os.Args[0]))
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	confDir := fs.String("confdir", "", "directory holding the conflist")
	netName := fs.String("net", "", "network name (the conflist's \"name\")")
	netns := fs.String("netns", "", "path of the pod's network namespace")
	id := fs.String("id", "", "container ID")
	ifname := fs.String("ifname", "eth0", "interface name in the pod")
	path := fs.String("path", "", "plugin directories, ':'-separated")
	cacheDir := fs.String("cachedir", "", "libcni's result cache directory")
	portMappings := fs.String("portmappings", "", "runtimeConfig portMappings, as JSON")
	timeout := fs.Duration("timeout", 30*time.Second, "upper bound for the whole operation")
	if err := fs.Parse(os.Args[2:]); err != nil {
		fail(err)
	}
	for name, v := range map[string]string{"confdir": *confDir, "net": *netName, "id": *id, "path": *path, "cachedir": *cacheDir} {
		if v == "" {
			fail(fmt.Errorf("-%s is required", name))
		}
	}

	list, err := libcni.LoadConfList(*confDir, *netName)
	if err != nil {
		fail(fmt.Errorf("load conflist %q from %s: %w", *netName, *confDir, err))
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    *id,
		NetNS:          *netns,
		IfName:         *ifname,
		CapabilityArgs: map[string]interface{}{},
	}
	if *portMappings != "" {
		var pm []map[string]interface{}
		if err := json.Unmarshal([]byte(*portMappings), &pm); err != nil {
			fail(fmt.Errorf("-portmappings is not a JSON list: %w", err))
		}
		rt.CapabilityArgs["portMappings"] = pm
	}
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(*path, ":"), *cacheDir, nil)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	switch cmd {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(fmt.Errorf("ADD %s: %w", *netName, err))
		}
		if err := res.Print(); err != nil {
			fail(fmt.Errorf("print the ADD result: %w", err))
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(fmt.Errorf("CHECK %s: %w", *netName, err))
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(fmt.Errorf("DEL %s: %w", *netName, err))
		}
	default:
		fail(fmt.Errorf("unknown command %q: expected add, check or del", cmd))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "twill-libcni:", err)
	os.Exit(1)
}
