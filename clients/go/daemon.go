// SPDX-License-Identifier: Apache-2.0

package estimator

/*
#include <stdlib.h>
#include <estimator_client.h>
*/
import "C"

import "time"

// EstimatorOptions configure StartEstimator. The zero value finds estimatord ($ESTIMATORD,
// next to the running executable, then $PATH) and serves a private segment.
type EstimatorOptions struct {
	Binary       string   // path of estimatord; "" = search as above
	ShmName      string   // "" = a private name
	ExtraArgs    []string // more estimatord arguments, e.g. {"--model-dir", "/models"}
	LogLevel     string   // "" = "warn"; the daemon logs to this process's stderr
	StartTimeout time.Duration
	StopTimeout  time.Duration // then SIGKILL
	Timeout      time.Duration // deadline of the embedded client's calls
}

// Estimator is an estimatord run as a child of this process (the 2022 prototype's
// StartPyEstimator), with a Client connected to it. The daemon gets SIGTERM when this
// process dies, even by SIGKILL; Destroy stops it sooner.
type Estimator struct {
	*Client
	d *C.estimator_daemon
}

// StartEstimator returns once the daemon answers a ping, or an *Error saying why it did
// not (binary not found, the daemon's exit status, the start deadline).
func StartEstimator(opts EstimatorOptions) (*Estimator, error) {
	var a arena
	defer a.free()
	var o C.estimator_daemon_options
	o.binary = a.str(opts.Binary)
	o.shm_name = a.str(opts.ShmName)
	o.extra_args = a.strs(opts.ExtraArgs)
	o.extra_arg_count = C.size_t(len(opts.ExtraArgs))
	o.log_level = a.str(opts.LogLevel)
	o.start_timeout_ms = millis(opts.StartTimeout)
	o.stop_timeout_ms = millis(opts.StopTimeout)
	var d *C.estimator_daemon
	var e C.estimator_error
	if err := fromC(C.estimator_daemon_spawn(&o, &d, &e), &e); err != nil {
		return nil, err
	}
	client, err := NewClient(Options{ShmName: C.GoString(C.estimator_daemon_shm_name(d)), Timeout: opts.Timeout})
	if err != nil {
		C.estimator_daemon_destroy(d)
		return nil, err
	}
	return &Estimator{Client: client, d: d}, nil
}

// ShmName is the daemon's segment.
func (e *Estimator) ShmName() string { return C.GoString(C.estimator_daemon_shm_name(e.d)) }

// Pid is the daemon's process id, -1 once destroyed.
func (e *Estimator) Pid() int {
	if e.d == nil {
		return -1
	}
	return int(C.estimator_daemon_pid(e.d))
}

// Destroy stops the daemon (SIGTERM, SIGKILL after the stop timeout), reaps it and closes
// the client; it returns the daemon's wait status. Calling it again does nothing.
func (e *Estimator) Destroy() (waitStatus int, err error) {
	if e == nil || e.d == nil {
		return 0, nil
	}
	e.Client.Close()
	var status C.int
	var ce C.estimator_error
	err = fromC(C.estimator_daemon_stop(e.d, &status, &ce), &ce)
	C.estimator_daemon_destroy(e.d)
	e.d = nil
	return int(status), err
}
