/*
 * options.h - the configuration, translated into each module's options.
 *
 * The modules know nothing of the config table; the commands that build them
 * (serve, reconcile, restore, probe, sync) get their options here, so a
 * setting means the same thing everywhere.
 */
#ifndef ABILITYSYNC_OPTIONS_H
#define ABILITYSYNC_OPTIONS_H

#include "api.h"
#include "config.h"
#include "pgpool.h"
#include "outbox.h"
#include "reconcile.h"
#include "restore.h"
#include "store.h"
#include "vdb.h"

void options_vdb(const struct config *c, struct vdb_opts *o);
void options_pgpool(const struct config *c, const char *application_name, struct pgpool_opts *o);
void options_store(const struct config *c, const char *owner, struct store_opts *o);
void options_outbox(const struct config *c, struct outbox_opts *o);
/* A name for this process's leases: host, pid and a random part (unique across restarts). */
void options_owner(char *out, size_t len);
void options_api(const struct config *c, struct api_opts *o);
void options_reconcile(const struct config *c, const char *application_name, struct reconcile_opts *o);
void options_restore(const struct config *c, const char *application_name, struct restore_opts *o);

#endif
