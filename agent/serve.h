/*
 * serve: the `ferry serve` lifecycle on the main thread: load the config,
 * open the spool, start the writer, dispatcher and listener, wait for
 * signals, and drain on SIGTERM/SIGINT.
 */
#ifndef FERRY_SERVE_H
#define FERRY_SERVE_H

struct serve_options {
    const char *config_path; /* NULL: FERRY_CONFIG, else the embedded default */
    const char *listen;      /* --listen, wins over file and env */
    const char *spool_dir;   /* --spool */
    const char *log_level;   /* --log-level */
};

/**
 * Load the configuration the way `serve` does (file or default, then
 * environment, then command-line overrides). NULL with errors printed to
 * stderr. Used by serve and check-config.
 */
struct config *serve_load_config(const struct serve_options *opt);

/** Run until SIGTERM/SIGINT. Returns the process exit code (0, 1 or 2). */
int serve_main(const struct serve_options *opt);

#endif
