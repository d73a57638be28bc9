/*
 * hash.h - SHA-256 (OpenSSL) in the forms abilitysync stores and compares.
 */
#ifndef ABILITYSYNC_HASH_H
#define ABILITYSYNC_HASH_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32
#define SHA256_HEX_LEN 64

void sha256(const void *data, size_t len, uint8_t out[SHA256_LEN]);

/* Lowercase hex, NUL-terminated: the form drizzle stores in its ledger. */
void sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1]);

/* sha256_hex of a's bytes followed by b's, without joining them. */
void sha256_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[SHA256_HEX_LEN + 1]);

void hex_encode(const uint8_t *in, size_t len, char *out);

/* The value of one hex digit (either case), or -1. */
int hex_value(char c);

#endif
