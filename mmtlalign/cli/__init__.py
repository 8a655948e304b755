"""What the command-line tools in ``tools/`` share: argument handling, config checks, the
launchers' set-up (:mod:`.launch`), one live run per work dir (:mod:`.work_dir_lock`), and
where the tools themselves are (:mod:`.paths`)."""
