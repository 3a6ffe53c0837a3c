#!/usr/bin/env node
require('../dist/src/cli/main').main(process.argv.slice(2));
