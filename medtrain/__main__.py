from medtrain.cli import _module_entry

_module_entry()
