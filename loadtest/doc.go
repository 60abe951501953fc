// Package loadtest drives a key-value-shaped load against memdbd (or, in
// the separate etcdcompare module, etcd) and reports throughput, latency
// percentiles from an HDR histogram, errors by gRPC code, and a latency
// and throughput timeline in which a failover shows as a gap.
//
// A run is a bounded producer feeding N workers: the producer draws
// operations from a Workload (keys uniform or zipfian) and, in open-loop
// mode, stamps each with the time it should start, at a fixed rate; a
// worker measures latency from that intended start, so a stalled system
// cannot hide its latency by slowing the load down (coordinated
// omission). In closed-loop mode every worker goes as fast as the system
// answers. Every run stops by itself, by duration or request count.
//
// Targets adapt the operations to a system (Target); the memdbd target
// uses the Go client SDK.
package loadtest
