/* manifest.c - function.json: parse, validate, fill defaults; check the
 * handler file against its runtime.
 *
 * Every refusal is -EINVAL with a message that starts with the field it is
 * about ("memory_mb: must be an integer between 16 and 16384"), so the
 * gateway can pass it to the user as is.
 */
#include "functions/manifest.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "functions/functions_internal.h"

#define STR_(x) #x
#define MANIFEST_STR(x) STR_(x)

const char *manifest_runtime_name(enum manifest_runtime r)
{
    switch (r) {
    case MANIFEST_RUNTIME_NATIVE:
        return "native";
    case MANIFEST_RUNTIME_EXEC:
        return "exec";
    }
    return "unknown";
}

const char *manifest_sandbox_name(enum manifest_sandbox s)
{
    switch (s) {
    case MANIFEST_SANDBOX_DEFAULT:
        return "default";
    case MANIFEST_SANDBOX_CONTAINER:
        return "container";
    case MANIFEST_SANDBOX_MICROVM:
        return "microvm";
    }
    return "unknown";
}

const char *manifest_network_name(enum manifest_network n)
{
    switch (n) {
    case MANIFEST_NETWORK_NONE:
        return "none";
    case MANIFEST_NETWORK_HOST:
        return "host";
    }
    return "unknown";
}

void manifest_free(struct manifest *m)
{
    for (size_t i = 0; i < m->n_env; i++) {
        free(m->env[i].key);
        free(m->env[i].value);
    }
    free(m->env);
    m->env = NULL;
    m->n_env = 0;
}

int manifest_copy(struct manifest *dst, const struct manifest *src)
{
    struct manifest m = *src;

    m.env = NULL;
    m.n_env = 0;
    if (src->n_env > 0) {
        m.env = calloc(src->n_env, sizeof(*m.env));
        if (!m.env)
            return -ENOMEM;
        for (; m.n_env < src->n_env; m.n_env++) {
            struct manifest_env *e = &m.env[m.n_env];
            e->key = strdup(src->env[m.n_env].key);
            e->value = strdup(src->env[m.n_env].value);
            if (!e->key || !e->value) {
                m.n_env++; /* free this half-filled entry too */
                manifest_free(&m);
                return -ENOMEM;
            }
        }
    }
    *dst = m;
    return 0;
}

/* ---- fields ---- */

static int parse_u32(json_t *v, const char *field, long long min, long long max, uint32_t *out,
                     struct ember_error *err)
{
    /* json_is_integer is false for 128.0 and 1e2, which jansson reads as reals. */
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return ember_error_set(err, -EINVAL, "%s: must be an integer between %lld and %lld", field,
                               min, max);
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

static int parse_runtime(json_t *v, struct manifest *m, struct ember_error *err)
{
    const char *s = json_string_value(v);

    if (s && strcmp(s, "native") == 0) {
        m->runtime = MANIFEST_RUNTIME_NATIVE;
        return 0;
    }
    if (s && strcmp(s, "exec") == 0) {
        m->runtime = MANIFEST_RUNTIME_EXEC;
        return 0;
    }
    if (s && (strcmp(s, "python") == 0 || strcmp(s, "node") == 0))
        return ember_error_set(err, -EINVAL,
                               "runtime: \"%s\" is not supported by this version of ember "
                               "(supported: \"native\", \"exec\")",
                               s);
    return ember_error_set(err, -EINVAL, "runtime: must be \"native\" or \"exec\"");
}

/* NULL if @h is an acceptable handler path, else why not. */
static const char *handler_problem(const char *h, size_t len)
{
    if (len == 0)
        return "must not be empty";
    if (len > MANIFEST_HANDLER_MAX)
        return "must be at most " MANIFEST_STR(MANIFEST_HANDLER_MAX) " bytes";
    if (h[0] == '/')
        return "must be a relative path inside the package, not an absolute one";
    if (h[len - 1] == '/')
        return "must not contain empty components or end with '/'";
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)h[i] < 0x20 || h[i] == 0x7f)
            return "must not contain control characters";
    for (const char *p = h; *p;) {
        const char *end = strchrnul(p, '/');
        size_t n = (size_t)(end - p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return "must not contain '..'";
        if (n == 1 && p[0] == '.')
            return "must not contain '.' components";
        if (n == 0)
            return "must not contain empty components or end with '/'";
        p = *end ? end + 1 : end;
    }
    return NULL;
}

static int parse_handler(json_t *v, struct manifest *m, struct ember_error *err)
{
    if (!json_is_string(v))
        return ember_error_set(err, -EINVAL, "handler: must be a string (a path in the package)");
    const char *h = json_string_value(v);
    size_t len = json_string_length(v);
    const char *why = handler_problem(h, len);
    if (why)
        return ember_error_set(err, -EINVAL, "handler: %s", why);
    memcpy(m->handler, h, len + 1);
    return 0;
}

static int parse_memory(json_t *v, struct manifest *m, struct ember_error *err)
{
    return parse_u32(v, "memory_mb", MANIFEST_MEMORY_MB_MIN, MANIFEST_MEMORY_MB_MAX, &m->memory_mb,
                     err);
}

static int parse_timeout(json_t *v, struct manifest *m, struct ember_error *err)
{
    return parse_u32(v, "timeout_ms", MANIFEST_TIMEOUT_MS_MIN, MANIFEST_TIMEOUT_MS_MAX,
                     &m->timeout_ms, err);
}

static int parse_concurrency(json_t *v, struct manifest *m, struct ember_error *err)
{
    return parse_u32(v, "concurrency", 1, MANIFEST_CONCURRENCY_MAX, &m->concurrency, err);
}

static int parse_network(json_t *v, struct manifest *m, struct ember_error *err)
{
    const char *s = json_string_value(v);

    if (s && strcmp(s, "none") == 0)
        m->network = MANIFEST_NETWORK_NONE;
    else if (s && strcmp(s, "host") == 0)
        /* Refused rather than silently narrowed: no backend can give a
         * sandbox the host's network yet, and a function that asks for it
         * would otherwise find only loopback at run time. */
        return ember_error_set(err, -EINVAL, "network: \"host\" is not supported by this "
                                             "version (sandboxes get loopback only); use \"none\"");
    else
        return ember_error_set(err, -EINVAL, "network: must be \"none\" or \"host\"");
    return 0;
}

static int parse_sandbox(json_t *v, struct manifest *m, struct ember_error *err)
{
    const char *s = json_string_value(v);

    if (s && strcmp(s, "container") == 0)
        m->sandbox = MANIFEST_SANDBOX_CONTAINER;
    else if (s && strcmp(s, "microvm") == 0)
        m->sandbox = MANIFEST_SANDBOX_MICROVM;
    else
        return ember_error_set(err, -EINVAL, "sandbox: must be \"container\" or \"microvm\"");
    return 0;
}

static int parse_fresh(json_t *v, struct manifest *m, struct ember_error *err)
{
    if (!json_is_boolean(v))
        return ember_error_set(err, -EINVAL, "fresh_per_call: must be true or false");
    m->fresh_per_call = json_is_true(v);
    return 0;
}

/* NULL if @key may name an environment variable of a function, else why not. */
static const char *env_key_problem(const char *key, size_t len)
{
    if (len == 0 || len > MANIFEST_ENV_KEY_MAX)
        return "must be 1 to " MANIFEST_STR(MANIFEST_ENV_KEY_MAX) " bytes";
    for (size_t i = 0; i < len; i++) {
        char c = key[i];
        bool ok = c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return "must match [A-Za-z_][A-Za-z0-9_]*";
    }
    if (strncmp(key, "EMBER_", 6) == 0)
        return "is reserved: the EMBER_ prefix belongs to ember";
    return NULL;
}

static int env_cmp(const void *a, const void *b)
{
    const struct manifest_env *x = a, *y = b;
    return strcmp(x->key, y->key);
}

static int parse_env(json_t *v, struct manifest *m, struct ember_error *err)
{
    if (!json_is_object(v))
        return ember_error_set(err, -EINVAL, "env: must be an object of string values");
    size_t n = json_object_size(v);
    if (n > MANIFEST_ENV_MAX)
        return ember_error_set(err, -EINVAL, "env: more than %d variables", MANIFEST_ENV_MAX);
    if (n == 0)
        return 0;

    m->env = calloc(n, sizeof(*m->env));
    if (!m->env)
        return ember_error_set(err, -ENOMEM, "env: out of memory");

    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        char q[FUNCTIONS__QUOTE_MAX];
        const char *why = env_key_problem(key, strlen(key));
        if (why)
            return ember_error_set(err, -EINVAL, "env: key '%s' %s",
                                   functions__quote(key, q, sizeof(q)), why);
        functions__quote(key, q, sizeof(q));
        if (!json_is_string(val))
            return ember_error_set(err, -EINVAL, "env.%s: must be a string", q);
        if (json_string_length(val) > MANIFEST_ENV_VALUE_MAX)
            return ember_error_set(err, -EINVAL, "env.%s: must be at most %d bytes", q,
                                   MANIFEST_ENV_VALUE_MAX);
        struct manifest_env *e = &m->env[m->n_env];
        e->key = strdup(key);
        e->value = strdup(json_string_value(val));
        m->n_env++;
        if (!e->key || !e->value)
            return ember_error_set(err, -ENOMEM, "env: out of memory");
    }
    qsort(m->env, m->n_env, sizeof(*m->env), env_cmp);
    return 0;
}

struct field {
    const char *name;
    int (*parse)(json_t *v, struct manifest *m, struct ember_error *err);
};

static const struct field fields[] = {
    {"runtime", parse_runtime},         {"handler", parse_handler},
    {"memory_mb", parse_memory},        {"timeout_ms", parse_timeout},
    {"concurrency", parse_concurrency}, {"env", parse_env},
    {"network", parse_network},         {"sandbox", parse_sandbox},
    {"fresh_per_call", parse_fresh},
};

/*
 * For a duplicate key, jansson quotes the key only when it is short; find it
 * in the text instead: the error position is just past its closing quote.
 * Returns the key (JSON-escaped, then quoted into @buf) or NULL.
 */
static const char *duplicate_key(const char *json, size_t len, const json_error_t *je, char *buf,
                                 size_t size)
{
    if (json_error_code(je) != json_error_duplicate_key || je->position < 2 ||
        (size_t)je->position > len || json[je->position - 1] != '"')
        return NULL;
    size_t end = (size_t)je->position - 1;
    for (size_t i = end; i-- > 0;) {
        if (json[i] != '"')
            continue;
        size_t bs = 0;
        while (i > bs && json[i - 1 - bs] == '\\')
            bs++;
        if (bs % 2)
            continue; /* an escaped quote inside the key */
        char key[MANIFEST_ENV_KEY_MAX + 32];
        size_t n = end - i - 1;
        if (n >= sizeof(key))
            n = sizeof(key) - 1;
        memcpy(key, json + i + 1, n);
        key[n] = '\0';
        return functions__quote(key, buf, size);
    }
    return NULL;
}

int manifest_parse(const char *json, size_t len, struct manifest *out, struct ember_error *err)
{
    struct manifest m = {
        .memory_mb = MANIFEST_MEMORY_MB_DEFAULT,
        .timeout_ms = MANIFEST_TIMEOUT_MS_DEFAULT,
        .concurrency = MANIFEST_CONCURRENCY_DEFAULT,
        .network = MANIFEST_NETWORK_NONE,
        .sandbox = MANIFEST_SANDBOX_DEFAULT,
    };
    bool seen[ARRAY_SIZE(fields)] = {false};
    json_error_t je;
    int r = 0;

    memset(out, 0, sizeof(*out));
    if (len > MANIFEST_FILE_MAX)
        return ember_error_set(err, -EINVAL, "function.json: larger than %d bytes",
                               MANIFEST_FILE_MAX);
    /* Duplicate keys are refused by jansson; its message quotes the key. */
    json_auto_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        char q[FUNCTIONS__QUOTE_MAX];
        const char *dup = duplicate_key(json, len, &je, q, sizeof(q));
        if (dup)
            return ember_error_set(err, -EINVAL,
                                   "function.json: duplicate key '%s' at line %d, column %d", dup,
                                   je.line, je.column);
        return ember_error_set(err, -EINVAL,
                               "function.json: invalid JSON at line %d, column %d: %s", je.line,
                               je.column, functions__quote(je.text, q, sizeof(q)));
    }
    if (!json_is_object(root))
        return ember_error_set(err, -EINVAL, "function.json: must be a JSON object");

    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        size_t i = 0;
        while (i < ARRAY_SIZE(fields) && strcmp(fields[i].name, key) != 0)
            i++;
        if (i == ARRAY_SIZE(fields)) {
            char q[FUNCTIONS__QUOTE_MAX];
            r = ember_error_set(err, -EINVAL,
                                "%s: unknown field (known: runtime, handler, memory_mb, "
                                "timeout_ms, concurrency, env, network, sandbox, fresh_per_call)",
                                functions__quote(key, q, sizeof(q)));
            goto fail;
        }
        seen[i] = true;
        r = fields[i].parse(v, &m, err);
        if (r < 0)
            goto fail;
    }
    if (!seen[0]) {
        r = ember_error_set(err, -EINVAL, "runtime: required (\"native\" or \"exec\")");
        goto fail;
    }
    if (!seen[1]) {
        r = ember_error_set(err, -EINVAL,
                            "handler: required (the path of the handler file in "
                            "the package)");
        goto fail;
    }
    /* A microVM runs a guest image built by the SDK: native code, no exec. */
    if (m.sandbox == MANIFEST_SANDBOX_MICROVM && m.runtime != MANIFEST_RUNTIME_NATIVE) {
        r = ember_error_set(err, -EINVAL,
                            "sandbox: \"microvm\" needs runtime \"native\" (a guest image built "
                            "with the ember SDK)");
        goto fail;
    }
    *out = m;
    return 0;

fail:
    manifest_free(&m);
    return r;
}

/* ---- the handler file ---- */

static ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    size_t n = 0;

    while (n < len) {
        ssize_t m = pread(fd, (char *)buf + n, len - n, (off_t)(off + n));
        if (m < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (m == 0)
            break;
        n += (size_t)m;
    }
    return (ssize_t)n;
}

/* Read and check the ELF header every runtime wants: ELF64, little-endian,
 * x86-64. Returns NULL or why not; -errno through *r on I/O failure. */
static const char *elf_header(int fd, Elf64_Ehdr *eh, int *r)
{
    ssize_t n = pread_full(fd, eh, sizeof(*eh), 0);

    *r = 0;
    if (n < 0) {
        *r = (int)n;
        return "cannot read it";
    }
    if (n < SELFMAG || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
        return "it is not an ELF file";
    if ((size_t)n < sizeof(*eh))
        return "its ELF header is truncated";
    if (eh->e_ident[EI_CLASS] != ELFCLASS64)
        return "it is a 32-bit ELF file";
    if (eh->e_ident[EI_DATA] != ELFDATA2LSB)
        return "it is a big-endian ELF file";
    if (eh->e_machine != EM_X86_64)
        return "it is built for another machine than x86-64";
    return NULL;
}

static bool range_ok(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

/* Do the notes at @off, @size in the file hold the ember note (owner
 * "ember", EMBER_GUEST_NOTE_TYPE)? 1, 0, or -errno. */
static int has_ember_note(int fd, uint64_t off_in_file, uint64_t size_in_file, uint64_t file_size)
{
    static const char owner[] = EMBER_GUEST_NOTE_OWNER;

    if (size_in_file > 64 * 1024 || !range_ok(off_in_file, size_in_file, file_size))
        return 0;
    cleanup_free unsigned char *buf = malloc(size_in_file ? size_in_file : 1);
    if (!buf)
        return -ENOMEM;
    ssize_t n = pread_full(fd, buf, size_in_file, off_in_file);
    if (n < 0)
        return (int)n;
    uint64_t size = (uint64_t)n, off = 0;
    while (size - off >= sizeof(Elf64_Nhdr)) {
        Elf64_Nhdr nh;
        memcpy(&nh, buf + off, sizeof(nh));
        off += sizeof(nh);
        uint64_t namesz = ((uint64_t)nh.n_namesz + 3) & ~3ull;
        uint64_t descsz = ((uint64_t)nh.n_descsz + 3) & ~3ull;
        if (namesz > size - off)
            return 0;
        if (nh.n_namesz == sizeof(owner) && memcmp(buf + off, owner, sizeof(owner)) == 0 &&
            nh.n_type == EMBER_GUEST_NOTE_TYPE)
            return 1;
        off += namesz;
        if (descsz > size - off)
            return 0;
        off += descsz;
    }
    return 0;
}

/* A microVM guest: static ELF64 x86-64 ET_EXEC with the SDK's note. */
static const char *guest_problem(int fd, const Elf64_Ehdr *eh, uint64_t size, int *r)
{
    static const char section[] = EMBER_GUEST_NOTE_SECTION;

    *r = 0;
    if (eh->e_type == ET_DYN)
        return "it is a shared object or a position-independent executable (ET_DYN); link it "
               "with -static -no-pie";
    if (eh->e_type != ET_EXEC)
        return "it is not an executable (ET_EXEC)";

    if (eh->e_phnum > 0 &&
        (eh->e_phentsize != sizeof(Elf64_Phdr) ||
         !range_ok(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr), size)))
        return "its program headers are damaged";
    bool in_segment = false; /* the note in a PT_NOTE segment, where the monitor reads it */
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr ph;
        ssize_t n = pread_full(fd, &ph, sizeof(ph), eh->e_phoff + (uint64_t)i * sizeof(ph));
        if (n != (ssize_t)sizeof(ph)) {
            *r = n < 0 ? (int)n : -EIO;
            return "cannot read its program headers";
        }
        if (ph.p_type == PT_INTERP)
            return "it needs a dynamic loader (PT_INTERP); link it statically";
        if (ph.p_type == PT_DYNAMIC)
            return "it has a dynamic section (PT_DYNAMIC); link it statically";
        if (ph.p_type == PT_NOTE && !in_segment) {
            int found = has_ember_note(fd, ph.p_offset, ph.p_filesz, size);
            if (found < 0) {
                *r = found;
                return "cannot read its notes";
            }
            in_segment = found > 0;
        }
    }

    const char *no_note =
        "it has no " EMBER_GUEST_NOTE_SECTION " note (owner \"" EMBER_GUEST_NOTE_OWNER
        "\", type 0x454d4252): build it with the ember SDK";
    /* The SDK's linker script puts the note in both a section named
     * EMBER_GUEST_NOTE_SECTION and a PT_NOTE segment; either will do (a
     * stripped image may have lost its section headers). Extended section
     * numbering is not something the SDK produces; treat it as no note. */
    if (in_segment)
        return NULL;
    if (eh->e_shoff == 0 || eh->e_shnum == 0 || eh->e_shentsize != sizeof(Elf64_Shdr) ||
        eh->e_shstrndx >= eh->e_shnum ||
        !range_ok(eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr), size))
        return no_note;
    Elf64_Shdr strtab;
    if (pread_full(fd, &strtab, sizeof(strtab),
                   eh->e_shoff + (uint64_t)eh->e_shstrndx * sizeof(strtab)) != sizeof(strtab) ||
        !range_ok(strtab.sh_offset, strtab.sh_size, size))
        return no_note;
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        Elf64_Shdr sh;
        char name[sizeof(section)];
        if (pread_full(fd, &sh, sizeof(sh), eh->e_shoff + (uint64_t)i * sizeof(sh)) != sizeof(sh))
            return no_note;
        if (!range_ok(sh.sh_name, sizeof(name), strtab.sh_size) ||
            pread_full(fd, name, sizeof(name), strtab.sh_offset + sh.sh_name) != sizeof(name) ||
            memcmp(name, section, sizeof(name)) != 0)
            continue;
        if (sh.sh_type != SHT_NOTE)
            continue;
        int found = has_ember_note(fd, sh.sh_offset, sh.sh_size, size);
        if (found < 0) {
            *r = found;
            return "cannot read its notes";
        }
        if (found)
            return NULL;
    }
    return no_note;
}

int manifest_check_handler(const struct manifest *m, int pkg_dirfd, struct ember_error *err)
{
    char q[FUNCTIONS__QUOTE_MAX];
    struct stat st;
    int r;

    functions__quote(m->handler, q, sizeof(q));
    /* O_NONBLOCK: never hang on a FIFO; the type is checked right after. */
    cleanup_close int fd = functions__open_beneath(pkg_dirfd, m->handler, O_RDONLY | O_NONBLOCK, 0);
    if (fd < 0) {
        if (fd == -ENOENT || fd == -ENOTDIR)
            return ember_error_set(err, -EINVAL, "handler '%s': not found in the package", q);
        if (fd == -ELOOP || fd == -EXDEV)
            return ember_error_set(err, -EINVAL,
                                   "handler '%s': must be a regular file in the package, not "
                                   "a symlink or a path through one",
                                   q);
        return ember_error_sys(err, fd, "handler '%s'", q);
    }
    if (fstat(fd, &st) < 0)
        return ember_error_sys(err, -errno, "handler '%s': fstat", q);
    if (!S_ISREG(st.st_mode))
        return ember_error_set(err, -EINVAL, "handler '%s': not a regular file", q);

    Elf64_Ehdr eh;
    const char *why;
    if (m->sandbox == MANIFEST_SANDBOX_MICROVM) {
        why = elf_header(fd, &eh, &r);
        if (!why && !r)
            why = guest_problem(fd, &eh, (uint64_t)st.st_size, &r);
        if (r < 0)
            return ember_error_sys(err, r, "handler '%s': %s", q, why);
        if (why)
            return ember_error_set(err, -EINVAL,
                                   "handler '%s': sandbox \"microvm\" needs a static ELF64 x86-64 "
                                   "executable built with the ember SDK, but %s",
                                   q, why);
        return 0;
    }

    switch (m->runtime) {
    case MANIFEST_RUNTIME_NATIVE:
        why = elf_header(fd, &eh, &r);
        if (r < 0)
            return ember_error_sys(err, r, "handler '%s': %s", q, why);
        if (!why && eh.e_type != ET_DYN)
            why = "it is not a shared object (ET_DYN); build it with -shared -fPIC";
        if (why)
            return ember_error_set(err, -EINVAL,
                                   "handler '%s': runtime \"native\" needs an ELF64 x86-64 "
                                   "shared object, but %s",
                                   q, why);
        return 0;
    case MANIFEST_RUNTIME_EXEC: {
        if (!(st.st_mode & (S_IXUSR | S_IXGRP | S_IXOTH)))
            return ember_error_set(err, -EINVAL,
                                   "handler '%s': runtime \"exec\" needs an executable file, but "
                                   "mode %04o has no execute bit",
                                   q, (unsigned)(st.st_mode & 07777));
        unsigned char magic[4] = {0};
        ssize_t n = pread_full(fd, magic, sizeof(magic), 0);
        if (n < 0)
            return ember_error_sys(err, (int)n, "handler '%s': read", q);
        if (n >= 2 && magic[0] == '#' && magic[1] == '!')
            return 0;
        if (n == 4 && memcmp(magic, ELFMAG, SELFMAG) == 0) {
            why = elf_header(fd, &eh, &r);
            if (r < 0)
                return ember_error_sys(err, r, "handler '%s': %s", q, why);
            if (why)
                return ember_error_set(err, -EINVAL,
                                       "handler '%s': runtime \"exec\" needs an x86-64 program, "
                                       "but %s",
                                       q, why);
            return 0;
        }
        return ember_error_set(err, -EINVAL,
                               "handler '%s': runtime \"exec\" needs a script starting with "
                               "'#!' or an ELF executable",
                               q);
    }
    }
    return ember_error_set(err, -EINVAL, "runtime: unknown");
}
