/*
 * probe.h - `abilitysync probe`: what a vector DB server actually does.
 *
 * The Infraxa API leaves questions open (reference/infraxa-api.md §6): is a key
 * needed and in which header, what "already exists" answers, what re-adding an
 * existing id does, whether GET returns the vector, how large a batch may be.
 * The probe asks the server itself, on a scratch tenant it creates and deletes,
 * prints a report and the configuration it recommends, and never prints the key.
 */
#ifndef ABILITYSYNC_PROBE_H
#define ABILITYSYNC_PROBE_H

#include "vdb.h"

struct probe_opts {
	const struct vdb_opts *vdb;
	size_t max_batch; /* the largest batch tried, in vectors */
	bool json;        /* print one JSON object instead of the report */
};

/* Returns an exit code: EXIT_OK when the server was studied and left clean. */
int probe_run(const struct probe_opts *o);

#endif
