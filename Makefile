# abilitysync - build, test and run.
#
#   make            build build/release/abilitysync (gcc, -O2)
#   make run        install what is missing, start Postgres + the service locally
#   make test       install what is missing, build both variants and the fuzz
#                   targets, run every suite (fuzz.sh: each target ~10 s)
#   make asan       the ASan + UBSan build (clang) in build/asan/
#   make fuzz       build the libFuzzer targets (build/fuzz/) and run each for
#                   FUZZ_SECONDS (default 60) on a copy of its corpus (tests/fuzz/)
#   make soak       the fault soak (tests/integration/soak.sh) for SOAK_SECONDS
#                   (default 1800; make test runs it for 180)
#   make clean
#
# One set of rules builds every variant: BUILD=release, asan or fuzz picks the
# compiler, flags and output directory build/$(BUILD)/.

BUILD ?= release
B := build/$(BUILD)
# `make V=1` shows the commands.
Q := $(if $(V),,@)
PREFIX ?= /usr/local

ifeq ($(BUILD),asan)
  CC := clang
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
else ifeq ($(BUILD),release)
  OPT := -O2 -g
else ifeq ($(BUILD),fuzz)
  # The library instrumented for libFuzzer (no main); the targets link -fsanitize=fuzzer.
  CC := clang
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
else
  $(error BUILD must be release, asan or fuzz)
endif

PKGS := libpq jansson libcrypto libssl libevent libevent_openssl libcurl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wpointer-arith -Wformat=2 -Wundef -Wcast-qual -Wvla
CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -Iinclude $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS := $(OPT) $(EXTRA_LDFLAGS)
LIBS := $(PKG_LIBS) -lm

# The product (src/, include/): everything but main.c goes into one static
# library that the programs and the unit tests link. The vector DB emulator
# (emulator/: a test double, not the product) is a second library on top of it.
LIB_SRCS := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJS := $(LIB_SRCS:src/%.c=$(B)/obj/%.o) $(B)/obj/openapi_doc.o
EMU_SRCS := $(filter-out emulator/emu_main.c,$(wildcard emulator/emu_*.c))
EMU_OBJS := $(EMU_SRCS:emulator/%.c=$(B)/obj/emu/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(B)/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(B)/%)
FUZZ_SECONDS ?= 60

.PHONY: all asan tests bench bench-tools test run deps clean lint install golden fuzz fuzz-build fuzz-targets soak \
	readme-tables openapi

all: $(B)/abilitysync $(B)/vdb-emulator

asan:
	$(MAKE) BUILD=asan all tests

# The load generator drives the fault tests too.
tests: $(UNIT_BINS) $(B)/loadgen

bench-tools: $(BENCH_BINS)

# Measurements to read, never timed tests (bench/README.md): one markdown table
# of ratios measured in one run. REG_N (5000) registrations per system, BENCH_N
# (100000) abilities restored and reconciled.
bench: deps all bench-tools
	bench/all.sh

$(B)/obj/%.o: src/%.c | $(B)/obj
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

# The OpenAPI document (api/openapi.json, made from api/openapi.yaml by `make
# openapi`) as a C string, served at /v1/openapi.json.
$(B)/obj/openapi_doc.c: api/openapi.json | $(B)/obj
	$(Q){ echo '#include "openapi.h"'; echo 'const char openapi_json[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; echo ';'; \
	  echo 'const size_t openapi_json_len = sizeof(openapi_json) - 1;'; } >$@

$(B)/obj/openapi_doc.o: $(B)/obj/openapi_doc.c
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

openapi:
	node tools/openapi.js

$(B)/obj/emu/%.o: emulator/%.c | $(B)/obj/emu
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -Iemulator -MMD -MP -c -o $@ $<

$(B)/libabilitysync.a: $(LIB_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/libemu.a: $(EMU_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/abilitysync: $(B)/obj/main.o $(B)/libabilitysync.a
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(B)/vdb-emulator: $(B)/obj/emu/emu_main.o $(B)/libemu.a $(B)/libabilitysync.a
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(B)/tests/%: tests/unit/%.c $(B)/libemu.a $(B)/libabilitysync.a | $(B)/tests
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) -Wno-missing-prototypes -Wno-cast-qual -Iemulator -MMD -MP -o $@ $< $(B)/libemu.a $(B)/libabilitysync.a $(LIBS) -lcriterion

# libFuzzer targets (BUILD=fuzz): tests/fuzz/fuzz_<name>.c -> build/fuzz/fuzz_<name>.
ifeq ($(BUILD),fuzz)
fuzz-targets: $(FUZZ_BINS)
else
fuzz-targets:
	$(MAKE) BUILD=fuzz fuzz-targets
endif

$(B)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(B)/libabilitysync.a
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(CC) $(CFLAGS) -fsanitize=fuzzer,address,undefined -MMD -MP -o $@ $< $(B)/libabilitysync.a $(LIBS)

# The benchmark programs share bench/lib/benchkit.c (flags, generated embeddings).
$(B)/obj/benchkit.o: bench/lib/benchkit.c | $(B)/obj
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(B)/%: bench/%.c $(B)/obj/benchkit.o $(B)/libabilitysync.a
	@$(if $(Q),echo "  BENCH   $@")
	$(Q)$(CC) $(CFLAGS) -MMD -MP -o $@ $< $(B)/obj/benchkit.o $(B)/libabilitysync.a $(LIBS)

$(B)/obj $(B)/obj/emu $(B)/tests:
	$(Q)mkdir -p $@

-include $(wildcard $(B)/obj/*.d $(B)/obj/emu/*.d $(B)/tests/*.d $(B)/fuzz_*.d $(BENCH_BINS:%=%.d))

# ---- the two commands a newcomer needs -----------------------------------

# NO_DEPS=1: for people who manage their own packages (make test / make run install nothing).
deps:
	@$(if $(NO_DEPS),echo "deps: NO_DEPS is set: installing nothing",tools/deps.sh)

test: deps
	$(MAKE) BUILD=release all tests
	$(MAKE) BUILD=asan all tests
	$(MAKE) BUILD=fuzz fuzz-targets
	tests/run.sh

# Fuzzing: every target for FUZZ_SECONDS, one at a time (tools/fuzz.sh:
# FUZZ_TARGETS="fuzz_a fuzz_b" picks some, FUZZ_MERGE=1 keeps what they found).
fuzz-build:
	$(MAKE) BUILD=fuzz fuzz-targets

fuzz: deps fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) tools/fuzz.sh

# The long fault soak: random faults under load for SOAK_SECONDS, then the invariant checker.
SOAK_SECONDS ?= 1800
soak: deps
	$(MAKE) BUILD=release all tests
	$(MAKE) BUILD=asan all tests
	SOAK_SECONDS=$(SOAK_SECONDS) tests/run.sh soak

run: deps all
	tools/run.sh

lint:
	shellcheck -s sh docker-entrypoint.sh tests/containers/postgres/postgres-entrypoint.sh && shellcheck -x tools/*.sh tests/run.sh tests/lib/*.sh tests/integration/*.sh bench/*.sh .ci/run
	yamllint -s docker-compose.yml

# After changing the configuration table or the exit statuses / error codes: the README's copies.
readme-tables: all
	tools/readme-tables.sh

# After adding a migration: regenerate the golden schema dump, review, commit.
golden: all
	tools/golden-schema.sh

install: all
	install -D -m 0755 $(B)/abilitysync $(DESTDIR)$(PREFIX)/bin/abilitysync
	install -D -m 0755 $(B)/vdb-emulator $(DESTDIR)$(PREFIX)/bin/vdb-emulator
	install -d $(DESTDIR)$(PREFIX)/share/abilitysync/drizzle/meta
	install -m 0644 drizzle-compat/drizzle/*.sql $(DESTDIR)$(PREFIX)/share/abilitysync/drizzle/
	install -m 0644 drizzle-compat/drizzle/meta/_journal.json $(DESTDIR)$(PREFIX)/share/abilitysync/drizzle/meta/

clean:
	rm -rf build
