// Command memdb-chaos runs memdbd's fault-injection harness against three
// real memdbd processes on loopback and checks the history.
//
//	go run ./chaos/cmd/memdb-chaos -duration 60s -seed 7 -nemesis mix -workload all
//
// It exits non-zero when any checker fails; the history, the node logs and
// porcupine's visualization are then left in -artifacts.
//
// With -endpoints it checks a live cluster instead: the same workloads
// and checkers through the members at those addresses, no faults of its
// own (bring yours: a rolling upgrade, a machine pulled), in tables named
// with -table-prefix, dropped at the end:
//
//	memdb-chaos -endpoints 10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000 -duration 5m
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/memdbd/memdbd/chaos"
)

func main() {
	var (
		seed     = flag.Uint64("seed", uint64(time.Now().UnixNano()), "random seed (faults and their timing)")
		duration = flag.Duration("duration", 60*time.Second, "length of the fault phase")
		nemesis  = flag.String("nemesis", "mix", "comma-separated nemeses, or mix for all: "+strings.Join(chaos.NemesisNames(), ", "))
		workload = flag.String("workload", "all", "comma-separated workloads (register, bank, set, counter, ttl), or all")
		workers  = flag.Int("workers", 3, "clients per workload")
		interval = flag.Duration("interval", 3*time.Second, "longest pause between faults")
		binary   = flag.String("binary", "", "memdbd binary (default: build it)")
		artifact = flag.String("artifacts", "artifacts", "directory for histories and logs of failed runs")
		quiet    = flag.Bool("q", false, "print only the summary")
		extra    = flag.String("memdbd-args", "", "space-separated extra flags for every memdbd, e.g. --read-lease=false")
		eps      = flag.String("endpoints", "", "check a live cluster at these client addresses (every member, comma-separated) instead of starting one; no nemeses")
		prefix   = flag.String("table-prefix", "", "with -endpoints: prefix of the workloads' table names (default check<seed>_)")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	wd, _ := os.Getwd()
	root, err := chaos.ModuleRoot(wd)
	if err != nil && *binary == "" && *eps == "" {
		fmt.Fprintln(os.Stderr, "memdb-chaos: run inside the memdbd module or pass -binary:", err)
		os.Exit(2)
	}
	cfg := chaos.Config{Seed: *seed, Duration: *duration, Workers: *workers, Interval: *interval,
		Binary: *binary, ModuleRoot: root, Artifacts: *artifact, Log: os.Stderr}
	if *quiet {
		cfg.Log = nil
	}
	cfg.ExtraArgs = strings.Fields(*extra)
	if *eps != "" {
		cfg.Endpoints = strings.Split(*eps, ",")
		cfg.TablePrefix = *prefix
		if cfg.TablePrefix == "" {
			cfg.TablePrefix = fmt.Sprintf("check%d_", *seed%1_000_000)
		}
	} else if *nemesis != "mix" {
		cfg.Nemeses = strings.Split(*nemesis, ",")
	}
	if *workload != "all" {
		cfg.Workloads = strings.Split(*workload, ",")
	}
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memdb-chaos:", err)
		os.Exit(2)
	}
	fmt.Print(rep)
	if !rep.OK() {
		os.Exit(1)
	}
}
