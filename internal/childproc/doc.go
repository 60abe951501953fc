// Package childproc sets how the fault-test, load-test and comparison
// harnesses start the server processes they own, so that none outlives
// its harness.
package childproc
