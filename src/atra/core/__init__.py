"""Pure core: arrays and frames in, values out. No network, disk, environment, clock or logging."""
